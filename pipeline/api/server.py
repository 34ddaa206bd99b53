"""Running the API: ``serve`` (the ``tess-pipeline api`` command) and ``ServerThread``
(uvicorn in a background thread on a free loopback port, for tests, benchmarks and
notebooks)."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from pipeline.config import Settings


def serve(settings: Settings | None = None, host: str = "127.0.0.1", port: int = 8000,
          log_level: str = "info", **app_options) -> None:
    """Serve the API with uvicorn until interrupted (``app_options``: see create_app).
    Listens on loopback by default; give host="0.0.0.0" to accept other machines."""
    from pipeline.api.app import create_app

    app = create_app(settings or Settings.load(), **app_options)
    # access logs show method, path and status; headers (the API key) are never logged
    uvicorn.run(app, host=host, port=port, log_level=log_level, proxy_headers=False,
                server_header=False)


class ServerThread:
    """``with ServerThread(app) as url:`` — the app served by uvicorn in a thread,
    on a port the OS picked (no race between choosing and binding it)."""

    def __init__(self, app, host: str = "127.0.0.1", log_level: str = "warning", **config):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.host, self.port = self.sock.getsockname()[:2]
        config.setdefault("timeout_keep_alive", 30)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on", **config))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the API server thread stopped during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API server did not start within {timeout:.0f} s")
            time.sleep(0.02)
        return self.url

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
