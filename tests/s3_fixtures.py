"""Real S3 servers for the fault tests: moto's S3 server on a fixed port (stoppable and
restartable; its state lives in this process, so objects survive a restart as on a
real server) and a small HTTP proxy in front of it that injects errors."""

from __future__ import annotations

import http.client
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from moto.server import ThreadedMotoServer

from pipeline.catalog.server import free_port
from pipeline.store import Store

BUCKET = "tess-faults"


class Moto:
    """moto's S3 server on a fixed loopback port, stoppable and restartable."""

    def __init__(self):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = None

    def start(self):
        if self.server is None:
            self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
            self.server.start()

    def stop(self):
        if self.server is not None:
            self.server.stop()
            self.server = None

    def restart_after(self, seconds: float) -> threading.Thread:
        thread = threading.Thread(target=lambda: (time.sleep(seconds), self.start()), daemon=True)
        thread.start()
        return thread


def store_at(prefix: str, options: dict, policy: dict | None = None) -> Store:
    if policy:
        options = {**options, "config_kwargs": policy}
    return Store(f"s3://{BUCKET}/{prefix}", options)


class FaultProxy(ThreadingHTTPServer):
    """Forwards HTTP to moto; the next requests get the queued (status, code) errors."""

    daemon_threads = True

    def __init__(self, upstream_port: int):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream_port = upstream_port
        self.faults: list[tuple[int, str]] = []
        self.down = False                      # every request answered 503 (an outage)
        self.trigger: tuple[re.Pattern, int] | None = None
        self.failing: re.Pattern | None = None
        self.requests: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def outage_after(self, pattern: str, count: int) -> None:
        """Go down once ``count`` requests matching ``pattern`` ("GET /bucket/key") have been
        served: an outage tied to what the pipeline is doing, not to the clock."""
        with self.lock:
            self.trigger = (re.compile(pattern), count)

    def fail_matching(self, pattern: str) -> None:
        """Answer every request matching ``pattern`` with 503 (a partial outage)."""
        with self.lock:
            self.failing = re.compile(pattern)

    def end_outage(self) -> None:
        with self.lock:
            self.down, self.trigger, self.failing = False, None, None

    def _served(self, path: str) -> None:
        with self.lock:
            if self.trigger and self.trigger[0].search(path):
                left = self.trigger[1] - 1
                self.trigger = (self.trigger[0], left) if left > 0 else None
                self.down = left <= 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            failing = self.server.failing and self.server.failing.search(f"{self.command} {self.path}")
            fault = (503, "ServiceUnavailable") if self.server.down or failing else (
                self.server.faults.pop(0) if self.server.faults else None)
            self.server.requests.append((self.command, self.path, fault[0] if fault else 200))
        if fault:
            status, code = fault
            xml = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code>"
                   f"<Message>injected by the test proxy</Message></Error>").encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(xml)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(xml)
            return
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        self.send_response(response.status)
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        length = response.getheader("Content-Length") if self.command == "HEAD" else len(data)
        self.send_header("Content-Length", str(length or 0))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()
        self.server._served(f"{self.command} {self.path}")

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


def proxied(options, proxy, prefix, policy=None) -> Store:
    return store_at(prefix, {**options, "client_kwargs": {"endpoint_url": proxy.endpoint}},
                    policy)


