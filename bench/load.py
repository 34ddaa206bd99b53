"""Load test (issue #8): 32 concurrent API clients for 60 s while a pipeline run writes.
Target: error rate 0; p50/p95/p99/max latency reported overall and per endpoint.

    python bench/load.py                                  # 32 clients x 60 s, 256x256 frames
    python bench/load.py --clients 8 --duration 15        # quicker

Three process groups, so that neither the load generator nor the Dask scheduler
shares an interpreter with the API: this one (the clients: asyncio keep-alive
connections, bench/api.py's), the API (uvicorn, ``--serve``) and the writer
(``--write``: a local Dask cluster). The writer first runs camera 1/CCD 1 so that
every endpoint has data, then runs CCD 2 (ingest, background, apertures, light
curves) and re-runs it whenever a run ends, so the catalog (embedded nx-27017) and
the store (a temp folder) are written all through the window. Clients only ask for
ids a listing returned, so a 404 is an error like any other non-2xx, a timeout or a
broken connection. Exit code 1 if any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from pathlib import Path

# one thread per numba kernel and BLAS call, as deployed (pipeline imports come later)
os.environ.update({v: os.environ.get(v, "1") for v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS",
                                                       "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})

sys.path.insert(0, str(Path(__file__).resolve().parent))          # bench/api.py, also under -m
DB = "tess"
# endpoint → weight: roughly what the GUI and notebooks do — mostly light curves and
# frame lists, polling the running job, now and then the dashboards
MIX = {"GET /health": 4, "GET /stats": 4, "GET /jobs": 4, "GET /jobs/{id}": 8, "GET /raw": 12,
       "GET /staging": 8, "GET /staging/cubes": 3, "GET /staging/cubes/{cube}/image": 3,
       "GET /curated/lightcurves": 12, "GET /curated/lightcurves/{id}": 18,
       "GET /curated/lightcurves/{id}/spectrum": 5, "GET /curated/lightcurves/{id}?format=csv": 2,
       "GET /curated/apertures": 6, "GET /curated/apertures/{id}": 6}
LISTING = {"jobs": "/jobs", "cubes": "/staging/cubes", "lightcurves": "/curated/lightcurves",
           "apertures": "/curated/apertures", "frames": "/raw"}


def term_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def write_runs(cfg: dict) -> None:
    """The writer: run CCD 1 once, then CCD 2 until a line on stdin (finishing the run
    in progress); events are JSON lines on stdout. SIGTERM cancels the run."""
    signal.signal(signal.SIGTERM, term_as_interrupt)
    import pipeline
    from pipeline.catalog import Catalog
    from pipeline.cluster import local
    from pipeline.config import Settings
    from pipeline.store import Store

    def emit(event: str, **fields):
        print(json.dumps({"event": event, "t": time.time(), **fields}, default=str), flush=True)

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    client = local(n_workers=cfg["workers"])
    catalog, store = Catalog(cfg["mongo"], database=DB), Store(cfg["store"])
    emit("scheduler", address=client.scheduler.address)
    job = None
    try:
        for n in range(10_000):
            if stop.is_set():
                break
            # re-runs redo everything (force): a re-run would otherwise reuse the
            # finished work and write almost nothing
            job = pipeline.submit(cfg["frames"][min(n, 1)], client=client, store=store, catalog=catalog,
                                  settings=Settings(store=cfg["store"], mongo_url=cfg["mongo"]),
                                  force=n > 1)
            emit("submitted", job=job.id, seed=n == 0)
            while job.wait(0.5) in ("queued", "running"):
                pass
            doc = catalog.jobs.find_one({"_id": job.id}) or {}
            emit("finished", job=job.id, status=job.status(), error=doc.get("error"),
                 counts=doc.get("counts"), timings=doc.get("timings"))
    except KeyboardInterrupt:
        if job is not None:
            job.cancel()
            job.wait(30)
    finally:
        catalog.close()
        cluster = client.cluster
        client.close()
        cluster.close()


def serve(mongo: str, store: str, scheduler: str, port: int) -> None:
    """The API: uvicorn on loopback, one process; with the scheduler, as deployed, so
    /health checks it too."""
    import uvicorn

    from pipeline.api import create_app
    from pipeline.catalog import Catalog
    from pipeline.config import Settings

    app = create_app(Settings(store=store, mongo_url=mongo, scheduler=scheduler), catalog=Catalog(mongo, database=DB))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- the clients ---------------------------------------------------------------------------
def request(rng: random.Random, known: dict) -> tuple[str, str, dict | None, str | None]:
    """(endpoint, path, params, what its listing teaches) of a random request; one that
    needs an id no listing has returned yet becomes that listing."""
    endpoint = rng.choices(list(MIX), list(MIX.values()))[0]
    path = endpoint.split()[1].split("?")[0]
    ccd = {"sector": 14, "camera": 1, "ccd": rng.choice([1, 2]), "limit": 100}
    if "{" in endpoint:
        kind = "jobs" if "/jobs" in path else "cubes" if "{cube}" in path else path.split("/")[2]
        items = list(known[kind].values())
        if kind == "jobs":            # the GUI polls the running job, sometimes an older one
            items = [j for j in items if j.get("status") == "running"] or items
        if kind == "cubes":
            items = [c for c in items if c.get("n_cadences")]
        if not items:
            return f"GET {LISTING[kind]}", LISTING[kind], None if kind == "cubes" else {"limit": 100}, kind
        item = rng.choice(items)
        if kind == "cubes":
            image = rng.choice([k for k in ("flux", "background", "sumimage", "pixel_flags") if k in item["arrays"]])
            return endpoint, path.format(cube=item["cube"]), {"kind": image,
                                                              "index": rng.randrange(item["n_cadences"])}, None
        return endpoint, path.format(id=item["id"]), {"format": "csv"} if "csv" in endpoint else None, None
    if path in ("/raw", "/staging"):
        frames = list(known["frames"].values())
        if frames and rng.random() < 0.5:
            ccd["btjd_from"] = rng.choice(frames)["time"]
        if path == "/staging" and rng.random() < 0.5:
            ccd["good"] = "true"
        return endpoint, path, ccd, "frames"
    if path.startswith("/curated"):
        stars = [s for s in known["lightcurves"].values() if s.get("ra") is not None]
        if stars and rng.random() < 0.3:                                  # a cone search
            star = rng.choice(stars)
            ccd = {"ra": star["ra"], "dec": star["dec"], "radius": 0.2, "limit": 100}
        return endpoint, path, ccd, path.split("/")[2]
    kind = {"/jobs": "jobs", "/staging/cubes": "cubes"}.get(path)
    return endpoint, path, {"limit": 20} if kind == "jobs" else None, kind


async def run_load(url: str, clients: int, duration: float, timeout: float) -> dict:
    from api import Connection

    host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
    known: dict = defaultdict(dict)                     # kind → {id: item} from listings
    records: list[tuple[str, float, bool, float]] = []  # (endpoint, seconds, ok, sent at)
    errors: dict = {}                                   # (outcome, endpoint) → [n, first at, last at, sample]
    checks = defaultdict(list)                          # /health's own latency per service (ms)
    started = time.perf_counter()
    stop_at = started + duration

    def failed(outcome: str, endpoint: str, text: str) -> None:
        at = time.perf_counter() - started
        errors.setdefault((outcome, endpoint), [0, at, at, text])[0] += 1
        errors[(outcome, endpoint)][2] = at

    async def client(seed: int):
        rng, conn = random.Random(seed), Connection(host, port)
        try:
            while time.perf_counter() < stop_at:
                endpoint, path, params, learn = request(rng, known)
                t0 = time.perf_counter()
                try:
                    status, body = await asyncio.wait_for(conn.get(path, params), timeout)
                    ok = 200 <= status < 300
                    if path == "/health":
                        for name, check in json.loads(body)["services"].items():
                            checks[name].append(check["latency_ms"])
                    if not ok:
                        failed(str(status), endpoint, f"{path} {params}: {body[:300]!r}")
                    elif learn:
                        for item in json.loads(body)["items"]:
                            known[learn][item.get("id") or item.get("cube") or item.get("file")] = item
                except Exception as exc:  # noqa: BLE001 - refused, reset, timed out, garbled: all errors
                    ok = False
                    failed("timeout" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__,
                           endpoint, f"{path} {params}: {exc!r}")
                    conn.close()                         # the stream is in an unknown state
                    conn = Connection(host, port)
                records.append((endpoint, time.perf_counter() - t0, ok, t0 - started))
        finally:
            conn.close()

    await asyncio.gather(*(client(i) for i in range(clients)))
    return {"records": records, "elapsed": time.perf_counter() - started, "errors": errors, "checks": checks,
            "known": {k: len(v) for k, v in known.items()}}


def report(result: dict, runs: list[dict], window: tuple[float, float], args, warmup: str) -> int:
    import numpy as np

    records, elapsed = result["records"], result["elapsed"]
    n_errors = sum(not r[2] for r in records)
    print(f"\nload test: {args.clients} clients x {args.duration:.0f} s against the API while runs write "
          f"({args.size}x{args.size} px, {args.frames} cadences per run); {os.cpu_count()} cores (load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}); uvicorn 1 process, loopback\n{warmup}\n")
    print(f"requests {len(records)}, {len(records) / elapsed:.1f} req/s, errors {n_errors} "
          f"(error rate {100 * n_errors / max(1, len(records)):.3f}%)\n")
    print(f"{'endpoint':44} {'requests':>8} {'req/s':>6} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'errors':>6}")
    groups = defaultdict(list)
    for endpoint, seconds, ok, _ in records:
        groups["all"].append((seconds, ok))
        groups[endpoint].append((seconds, ok))
    for name in ["all"] + sorted(set(groups) - {"all"}):
        lat = np.array([s for s, _ in groups[name]]) * 1000
        p50, p95, p99 = np.percentile(lat, [50, 95, 99])
        print(f"{name:44} {len(lat):>8} {len(lat) / elapsed:>6.1f} {p50:>7.1f} {p95:>7.1f} {p99:>7.1f} "
              f"{lat.max():>7.1f} {sum(not ok for _, ok in groups[name]):>6}")
    print("\n/health's checks inside the API, ms (p50/p99/max): " + "; ".join(
        f"{name} {np.percentile(v, 50):.0f}/{np.percentile(v, 99):.0f}/{max(v):.0f}"
        for name, v in sorted(result["checks"].items())))
    # when the tail happened, to set against the runs' stage times below
    slow = sorted(records, key=lambda r: -r[1])[:max(1, len(records) // 100)]
    print(f"slowest 1% ({len(slow)} requests, >= {slow[-1][1] * 1000:.0f} ms) sent at (s into the window: "
          f"count): {', '.join(f'{t}: {n}' for t, n in sorted(Counter(int(r[3]) for r in slow).items()))}")
    if result["errors"]:
        print("\nerrors by outcome and endpoint (s into the window):")
        for (outcome, endpoint), (n, first, last, sample) in sorted(result["errors"].items()):
            print(f"  {outcome} {endpoint}: {n}, at {first:.1f}..{last:.1f}; first: {sample}")
    print("\nids learnt from listings: " + ", ".join(f"{k} {n}" for k, n in sorted(result["known"].items())))
    start, end = window
    print(f"\nruns (s from the start of the window, which ended at {end - start:.1f}):")
    inside = written = 0
    for run in runs:
        counts, timings = run.get("counts") or {}, run.get("timings") or {}
        ends = ", ".join(f"{s} {run['submitted'] - start + timings[s]:+.0f}"
                         for s in ("ingest", "background", "apertures", "lightcurves") if s in timings)
        finished = f"{run['finished'] - start:+6.1f}" if "finished" in run else "   -  "
        print(f"  {run['job']} {'CCD 1-1 (seed)' if run['seed'] else 'CCD 1-2':14} {run['submitted'] - start:+6.1f} "
              f".. {finished} {run.get('status', 'unfinished'):10} frames {counts.get('frames', '-')}, apertures "
              f"{counts.get('apertures', '-')}, light curves {counts.get('lightcurves', '-')}; stages ended "
              f"at {ends or '-'}" + (f"\n      error: {run['error']}" if run.get("error") else "")
              + (f"\n      at the end of the window: running, progress {run['progress'] or '{} (planning)'}"
                 if "progress" in run else ""))
        if not run["seed"] and run.get("status") == "done" and run["finished"] <= end:
            inside, written = inside + 1, written + (counts.get("lightcurves") or 0)
    print(f"runs finished inside the window: {inside} ({written} light curves written); failed runs: "
          f"{sum(r.get('status') not in ('done', None) for r in runs)}")
    p99 = np.percentile([r[1] for r in records], 99) * 1000
    print(f"\ntarget error rate 0: {'met' if n_errors == 0 else 'MISSED'} ({n_errors} errors); p99 {p99:.1f} ms")
    return 0 if n_errors == 0 else 1


def stop_process(proc: subprocess.Popen | None, grace: float) -> None:
    """SIGTERM, then SIGKILL to its process group (its own session: the Dask workers too)."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    p.add_argument("--size", type=int, default=256, help="simulated frames are SIZE x SIZE px")
    p.add_argument("--frames", type=int, default=200, help="cadences per run")
    p.add_argument("--workers", type=int, default=2, help="Dask workers of the writer")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per request (then an error)")
    p.add_argument("--drain", type=float, default=300.0, help="seconds to let the last run finish")
    p.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--write", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        return serve(*args.serve[:3], int(args.serve[3])) or 0
    if args.write:
        return write_runs(json.loads(args.write)) or 0

    import httpx
    from api import wait_until_up

    from pipeline.catalog import Catalog, EmbeddedMongo
    from pipeline.catalog.server import free_port
    from pipeline.simulate import simulate

    signal.signal(signal.SIGTERM, term_as_interrupt)        # a kill also runs the cleanup below
    workdir = Path(tempfile.mkdtemp(prefix="tess-bench-load-"))
    server = catalog = api = writer = None
    try:
        server = EmbeddedMongo(workdir / "catalog")            # pid and log files in there, never /dev/null
        catalog = Catalog(server.url, database=DB)
        catalog.ensure_indexes()
        for ccd in (1, 2):
            simulate(workdir / f"frames-{ccd}", frames=args.frames, size=args.size, camera=1, ccd=ccd,
                     sector=14, cadence=1800.0, seed=ccd)
        cfg = {"mongo": server.url, "store": str(workdir / "store"), "workers": args.workers,
               "frames": [sorted(str(f) for f in (workdir / f"frames-{c}").glob("*_ffic.fits")) for c in (1, 2)]}
        # own sessions: Ctrl-C reaches only this process, which stops them in order
        writer = subprocess.Popen([sys.executable, __file__, "--write", json.dumps(cfg)], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, start_new_session=True)
        events: queue.Queue = queue.Queue()
        reader = threading.Thread(target=lambda: [events.put(json.loads(line)) for line in writer.stdout
                                                  if line.startswith('{"event"')], daemon=True)
        reader.start()

        def next_event() -> dict:
            while True:
                try:
                    return events.get(timeout=1)
                except queue.Empty:
                    if not reader.is_alive():
                        raise RuntimeError(f"the writer process ended (exit code {writer.wait()})") from None

        scheduler = next_event()["address"]
        port = free_port()
        api = subprocess.Popen([sys.executable, __file__, "--serve", server.url, cfg["store"], scheduler,
                                str(port)], start_new_session=True)
        wait_until_up(f"http://127.0.0.1:{port}")
        # a deployed API has had its health probed long before; the first probe connects the
        # API to the scheduler, so it is made (and shown) outside the window
        t = time.perf_counter()
        first = httpx.get(f"http://127.0.0.1:{port}/health", timeout=60)
        warmup = f"first /health (before the window): {first.status_code} in {(time.perf_counter() - t) * 1000:.0f} ms"
        if first.status_code != 200:
            warmup += f": {first.text}"
        seed = next_event()
        runs = [{**next_event(), "seed": True, "submitted": seed["t"]}]   # every endpoint has data
        runs[0]["finished"] = runs[0]["t"]
        current = next_event()                               # the run the load starts with
        runs.append(current := {"job": current["job"], "seed": False, "submitted": current["t"]})
        print(f"seed run {runs[0]['status']}; {args.clients} clients for {args.duration:.0f} s ...", file=sys.stderr)
        start = time.time()
        result = asyncio.run(run_load(f"http://127.0.0.1:{port}", args.clients, args.duration, args.timeout))
        end = time.time()
        progress = {d["_id"]: d.get("progress") for d in catalog.jobs.find({"status": "running"})}
        stop_process(api, 10)                                # before its scheduler goes away
        writer.stdin.write("stop\n")                         # no new run; the current one finishes
        writer.stdin.flush()
        reader.join(args.drain)
        while not events.empty():
            event = events.get()
            if event["event"] == "finished":
                current.update(event, finished=event["t"])
            else:
                runs.append(current := {"job": event["job"], "seed": False, "submitted": event["t"]})
        for run in runs:
            if run["job"] in progress:
                run["progress"] = progress[run["job"]]
        return report(result, runs, (start, end), args, warmup)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)         # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_process(api, 10)
        stop_process(writer, 60)
        if catalog is not None:
            catalog.close()
        if server is not None:
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
