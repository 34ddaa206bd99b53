#!/usr/bin/env bash
# A real S3 server for the integration tests: a one-node Ceph cluster (monitor + one
# in-memory "memstore" OSD) with the RADOS Gateway in front, on loopback only, no
# authentication between the daemons, one S3 user with fixed test keys.
#
#   scripts/s3-server.sh start DIR PORT   # S3 at http://127.0.0.1:PORT; state, logs in DIR
#   scripts/s3-server.sh stop DIR [PORT]  # stops the daemons started in DIR, removes DIR
#   scripts/s3-server.sh status DIR [PORT]
#
# Needs Debian's packages: apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw
# (exit status 3 when they are missing). Up in ~10 s.
# Environment:
#   S3_SERVER_MON_PORT   monitor port (default PORT + 1); the OSD takes ports from 6800 up
#   S3_SERVER_KEY / S3_SERVER_SECRET  the S3 user's keys (default: fixed test-only keys;
#                        the server listens on 127.0.0.1 only and lives in memory)
#   S3_SERVER_MEMORY_MB  memstore size (default 2048)
#   KEEP=1               stop keeps DIR (logs) instead of removing it
# After start, DIR/env holds TESS_S3_ENDPOINT, TESS_S3_KEY and TESS_S3_SECRET lines.
set -euo pipefail

usage() { echo "usage: $0 start|stop|status DIR [PORT]" >&2; exit 2; }
[ $# -ge 2 ] || usage
ACTION=$1; D=$2; PORT=${3:-}
DAEMONS="client.rgw.a osd.0 mon.a"   # stop order: gateway, then storage, then monitor

# is the gateway answering HTTP on 127.0.0.1:$1? (python3: curl is not always installed)
http_up() {
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/", timeout=2)' \
    "$1" >/dev/null 2>&1
}

pid_of() { [ -f "$D/run/$1.pid" ] && cat "$D/run/$1.pid" 2>/dev/null || true; }
alive() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

stop_all() {
  local name pid i
  for name in $DAEMONS; do
    pid=$(pid_of "$name")
    [ -n "$pid" ] || continue
    kill "$pid" 2>/dev/null || continue
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  done
}

case "$ACTION" in
  stop)
    [ -d "$D" ] || exit 0
    stop_all
    [ "${KEEP:-0}" = 1 ] || rm -rf "$D"
    exit 0 ;;
  status)
    for name in $DAEMONS; do
      if alive "$name"; then echo "$name running (pid $(pid_of "$name"))"; else echo "$name not running"; fi
    done
    [ -z "$PORT" ] || http_up "$PORT" && exit 0 || exit 1 ;;
  start) [ -n "$PORT" ] || usage ;;
  *) usage ;;
esac

missing=""
for tool in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool; do
  command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  echo "s3-server: missing$missing; install with:" >&2
  echo "  apt-get install -y --no-install-recommends ceph-mon ceph-osd radosgw" >&2
  exit 3
fi
for name in $DAEMONS; do
  if alive "$name"; then echo "s3-server: $name already running from $D; stop it first" >&2; exit 1; fi
done

MON_PORT=${S3_SERVER_MON_PORT:-$((PORT + 1))}
KEY=${S3_SERVER_KEY:-tess-integration-key}
SECRET=${S3_SERVER_SECRET:-tess-integration-secret}
MEMORY=$(( ${S3_SERVER_MEMORY_MB:-2048} * 1024 * 1024 ))

rm -rf "$D"
mkdir -p "$D"/{mon/ceph-a,osd/ceph-0,run,log,rgw}
D=$(cd "$D" && pwd)
C="-c $D/ceph.conf"

fail() {
  echo "s3-server: $*" >&2
  for log in "$D"/log/*.log; do
    [ -f "$log" ] && { echo "--- $log (last lines)" >&2; tail -n 15 "$log" >&2; }
  done
  stop_all
  exit 1
}
trap 'fail "start failed (line $LINENO)"' ERR

# a command against the new monitor, retried: right after start it may not answer yet
ceph_cmd() {
  local i
  for i in 1 2 3 4 5; do
    timeout 20 ceph $C --connect-timeout 15 "$@" >>"$D/log/setup.log" 2>&1 && return 0
    sleep 1
  done
  fail "ceph $* failed 5 times"
}

FSID=$(python3 -c 'import uuid; print(uuid.uuid4())')
cat >"$D/ceph.conf" <<EOF
[global]
fsid = $FSID
mon host = [v1:127.0.0.1:$MON_PORT]
ms bind msgr2 = false
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
mon max pg per osd = 1000
osd objectstore = memstore
memstore device bytes = $MEMORY
run dir = $D/run
log file = $D/log/\$name.log
admin socket = $D/run/\$name.asok
pid file = $D/run/\$name.pid
ms bind ipv6 = false
public network = 127.0.0.0/8
[mon]
mon data = $D/mon/ceph-\$id
[osd]
osd data = $D/osd/ceph-\$id
# osd.0 is placed in the CRUSH map below; its own update at boot races the monitor
# map ("wrong fsid") and then aborts the start
osd crush update on start = false
osd class update on start = false
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$PORT
rgw data = $D/rgw
EOF

cd "$D"
# v1 protocol only: on a port other than 6789 monmaptool would assume msgr2, which
# does not talk to clients with "auth ... = none"
monmaptool --create --addv a "[v1:127.0.0.1:$MON_PORT]" --fsid "$FSID" monmap >>log/setup.log 2>&1
ceph-mon $C --mkfs -i a --monmap monmap >>log/setup.log 2>&1
# every daemon forks into the background once it reached the monitor: bounded waits
timeout 60 ceph-mon $C -i a >>log/setup.log 2>&1
OSD_UUID=$(python3 -c 'import uuid; print(uuid.uuid4())')
ceph_cmd osd new "$OSD_UUID"
timeout 60 ceph-osd $C -i 0 --mkfs --osd-uuid "$OSD_UUID" >>log/setup.log 2>&1
ceph_cmd osd crush add-bucket localhost host
ceph_cmd osd crush move localhost root=default
ceph_cmd osd crush add osd.0 1.0 host=localhost
timeout 60 ceph-osd $C -i 0 >>log/setup.log 2>&1
timeout 60 radosgw $C -n client.rgw.a >>log/setup.log 2>&1

up=""
for i in $(seq 120); do
  if http_up "$PORT"; then up=1; break; fi
  alive client.rgw.a || fail "radosgw exited"
  sleep 0.5
done
[ -n "$up" ] || fail "radosgw did not answer on 127.0.0.1:$PORT within 60 s"
timeout 60 radosgw-admin $C -n client.rgw.admin user create --uid=tess --display-name=tess \
  --access-key="$KEY" --secret="$SECRET" >>log/setup.log 2>&1 || fail "radosgw-admin user create failed"
trap - ERR

cat >"$D/env" <<EOF
TESS_S3_ENDPOINT=http://127.0.0.1:$PORT
TESS_S3_KEY=$KEY
TESS_S3_SECRET=$SECRET
EOF
echo "s3-server: RGW up on http://127.0.0.1:$PORT (mon $(pid_of mon.a), osd $(pid_of osd.0), rgw $(pid_of client.rgw.a)); settings in $D/env"
