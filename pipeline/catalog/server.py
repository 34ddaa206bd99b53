"""The embedded catalog server: a MongoDB wire-protocol server on SQLite (nx-27017).

It lets the real pymongo driver talk TCP to a local process, exactly as it would to a
production MongoDB, with no service to install. Started on a free loopback port,
its data in a file of our choosing, stopped on ``stop()``, on exit, or by ``with``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymongo


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class EmbeddedMongo:
    """A running nx-27017 server keeping one SQLite file per database in ``data_dir``
    (or in memory for "memory"). One file per database matters: in its single-file
    mode every database name shares the same collections."""

    def __init__(self, data_dir: str | os.PathLike = "memory", host: str = "127.0.0.1",
                 port: int | None = None, log_path: str | os.PathLike | None = None,
                 startup_timeout: float = 30.0):
        self.data_dir = str(data_dir)
        self.host = host
        self.port = port or free_port(host)
        in_memory = self.data_dir == "memory"
        # The server removes its pid file when it stops, so it must never be a shared
        # path such as /dev/null: an in-memory server keeps its files in a private
        # folder of its own.
        self._scratch = tempfile.mkdtemp(prefix="nx27017-") if in_memory else None
        files_dir = self._scratch or self.data_dir
        Path(files_dir).mkdir(parents=True, exist_ok=True)
        self.pid_path = os.path.join(files_dir, "server.pid")
        self.log_path = str(log_path or os.path.join(files_dir, "server.log"))
        self._proc: subprocess.Popen | None = None
        self._start(startup_timeout)

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    @property
    def pid(self) -> int | None:
        """The server process' id (None once stopped)."""
        return self._proc.pid if self._proc is not None else None

    def _start(self, timeout: float) -> None:
        exe = shutil.which("nx-27017", path=os.path.dirname(sys.executable)) or shutil.which("nx-27017")
        if exe is None:
            raise RuntimeError("nx-27017 is not installed: pip install nx-27017 "
                               "(or set TESS_MONGO_URL to a MongoDB server)")
        # the server also logs every warning to stderr: into a file, never a pipe — a
        # pipe nobody drains fills up (64 KiB) and the server blocks in its logger
        stderr_path = os.path.join(os.path.dirname(self.log_path), "server.stderr")
        with open(stderr_path, "ab") as stderr:
            self._proc = subprocess.Popen(
                [exe, "--host", self.host, "-p", str(self.port), "--data-dir", self.data_dir,
                 "--log-file", self.log_path, "--pid-file", self.pid_path],
                stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                with open(stderr_path, "rb") as f:
                    err = f.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"catalog server exited at start (code {self._proc.returncode}): {err}")
            try:
                with pymongo.MongoClient(self.url, serverSelectionTimeoutMS=500) as client:
                    client.admin.command("ping")
                return
            except pymongo.errors.PyMongoError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"catalog server did not answer on {self.url} within {timeout:.0f} s")

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> "EmbeddedMongo":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.alive() else "stopped"
        return f"<EmbeddedMongo {self.url} data={self.data_dir} {state}>"
