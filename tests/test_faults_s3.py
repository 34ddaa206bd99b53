"""S3 faults (issue #8) against real servers: moto's S3 server on a fixed port that the
tests stop and restart (its state lives in this process, so objects and buckets
survive the restart, as on a real server), and a small HTTP proxy in front of it that
answers chosen requests with 5xx / throttling / 403 errors.

- a ~2 s outage in the middle of a raw upload, a zarr cube write, a FITS read and a
  whole ingest is ridden out by botocore's retries (``pipeline.store.retry``);
- a longer outage ends in ``StoreUnavailable`` naming the store, the key and the
  operation, within the retry budget; an ingest hit by it fails (no file is rejected
  for it) and re-running it finishes the work without duplicates;
- 500/503 SlowDown responses are retried, a 403 is not.
"""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import s3fs
from moto.server import ThreadedMotoServer

from pipeline.catalog.server import free_port
from pipeline.io import TessFileError, read, read_info
from pipeline.simulate import simulate
from pipeline.stages.ingest import ingest, plan_ingest
from pipeline.store import Cube, Store, StoreUnavailable, is_transient
from pipeline.store.retry import ATTEMPTS, worst_case_backoff

BUCKET = "tess-faults"
OUTAGE_S = 2.0
SHORT_POLICY = {"retries": {"mode": "standard", "total_max_attempts": 3}}  # waits ≤ 1 + 2 s


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


@pytest.fixture(scope="module")
def moto():
    server = Moto()
    server.start()
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(key="testing", secret="testing",
                           client_kwargs={"endpoint_url": server.endpoint})
    fs.mkdir(BUCKET)
    yield server
    server.stop()


@pytest.fixture
def options(moto, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    moto.start()   # a test that failed half-way may have left it stopped
    s3fs.S3FileSystem.clear_instance_cache()
    yield {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": moto.endpoint}}
    moto.start()
    s3fs.S3FileSystem.clear_instance_cache()


def store_at(prefix: str, options: dict, policy: dict | None = None) -> Store:
    if policy:
        options = {**options, "config_kwargs": policy}
    return Store(f"s3://{BUCKET}/{prefix}", options)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("sim"), frames=6, size=8, camera=3, ccd=1,
                    sector=21, seed=9).paths


def test_retry_policy_is_configured_not_hand_written(options, tmp_path):
    store = store_at("policy", options)
    assert store.storage_options["config_kwargs"]["retries"] == \
        {"mode": "standard", "total_max_attempts": ATTEMPTS}
    assert store.attempts == ATTEMPTS and worst_case_backoff() == 71.0
    store.exists("raw/nothing")     # the client is made on first use
    assert store.fs._s3.meta.config.retries["total_max_attempts"] == ATTEMPTS
    mine = store_at("policy", options, SHORT_POLICY)     # the caller's choice wins
    assert mine.attempts == 3 and worst_case_backoff(3) == 3.0
    assert "config_kwargs" not in Store(str(tmp_path)).storage_options   # local: nothing


# -- a short outage is ridden out ----------------------------------------------------------
def test_upload_started_during_an_outage_lands_after_the_restart(moto, options):
    store = store_at("short", options)
    data = np.random.default_rng(1).bytes(300_000)
    store.exists("raw/warm-up")                # a live connection pool, as mid-run
    moto.stop()
    started = time.perf_counter()
    moto.restart_after(OUTAGE_S)
    assert store.put_raw(data, "raw/x/file.fits", "0" * 64, name="file.fits") == "uploaded"
    took = time.perf_counter() - started
    assert took >= OUTAGE_S * 0.9, f"{took:.2f} s: the upload cannot have waited for the server"
    with store.open("raw/x/file.fits") as f:
        assert f.read() == data
    print(f"upload through a {OUTAGE_S:.0f} s outage: {took:.2f} s")


def test_cube_write_and_fits_read_ride_out_an_outage(moto, options, frames):
    store = store_at("short-cube", options)
    cube = Cube(store, "s0021-3-1")
    cube.create((4, 4), {"shape": [4, 4]})
    flux = np.arange(2 * 16, dtype=np.float32).reshape(2, 4, 4)
    moto.stop()
    moto.restart_after(OUTAGE_S)
    start = cube.extend([1.0, 2.0], [1, 2], [0, 0])
    cube.write(start, flux, flux + 1)
    assert np.array_equal(cube.group("r")["flux"][:], flux)

    store.put_raw(frames[0].read_bytes(), "raw/in/" + frames[0].name, "0" * 64)
    url = store.url_of("raw/in/" + frames[0].name)
    moto.stop()
    moto.restart_after(OUTAGE_S)
    stack = read(url, storage_options=store.storage_options)
    assert stack.flux.tobytes() == read(frames[0]).flux.tobytes()


# -- a long outage is a clear error ----------------------------------------------------------
def test_long_outage_is_a_clear_error_within_the_retry_budget(moto, options):
    store = store_at("long", options, SHORT_POLICY)
    cube = Cube(store, "s0021-3-2")
    cube.create((4, 4), {"shape": [4, 4]})
    moto.stop()
    for action, call, key in (
            ("writing", lambda: store.put_raw(b"x" * 100, "raw/y/a.fits", "0" * 64), "raw/y/a.fits"),
            ("opening", lambda: cube.extend([1.0], [1], [0]), cube.key),  # its first step
            ("checking", lambda: store.exists("raw/y/b.fits"), "raw/y/b.fits")):
        started = time.perf_counter()
        with pytest.raises(StoreUnavailable) as err:
            call()
        took = time.perf_counter() - started
        message = str(err.value)
        assert message.startswith(f"store s3://{BUCKET}/long unavailable while {action} {key!r}"), \
            message
        assert "3 attempts" in message and "Could not connect" in message, message
        assert not isinstance(err.value, OSError)    # not mistaken for a bad file
        assert took <= worst_case_backoff(3) + 3.0, f"{action}: gave up after {took:.1f} s"
        print(f"{action}: StoreUnavailable after {took:.2f} s")
    url = store.url_of("raw/y/c.fits")          # the readers: an outage is no bad file
    with pytest.raises(StoreUnavailable) as err:
        read_info(url, storage_options=store.storage_options)
    assert not isinstance(err.value, TessFileError) and url in str(err.value)


@pytest.mark.slow   # a whole ingest on the LocalCluster, twice
def test_ingest_hit_by_a_long_outage_fails_then_resumes(moto, options, frames, catalog,
                                                        dask_client):
    """The outage hits the pixel tasks (on the workers) after the plan: the run fails
    with StoreUnavailable, rejects no file, and re-running repairs it exactly."""
    store = store_at("ingest-long", options, SHORT_POLICY)
    paths = [str(p) for p in frames]
    plan = plan_ingest(paths, store, catalog, dask_client)
    moto.stop()
    with pytest.raises(StoreUnavailable) as err:
        dask_client.compute(plan.pixel_tasks(), sync=True)
    assert f"s3://{BUCKET}/ingest-long" in str(err.value)
    assert catalog.rejections() == []
    moto.start()
    report = ingest(paths, store, catalog, dask_client)
    assert report.count("repaired") == len(paths) and not report.rejected, report.files
    assert catalog.frames.count_documents({}) == len(paths)
    cube = Cube(store, "s0021-3-1")
    assert len(cube.coords()["time"]) == len(paths)
    again = ingest(paths, store, catalog, dask_client)
    assert again.count("duplicate") == len(paths)
    assert catalog.frames.count_documents({}) == len(paths)
    for i, path in enumerate(paths):
        assert cube.group("r")["flux"][i].tobytes() == read(path).flux[0].tobytes()


@pytest.mark.slow
def test_ingest_rides_out_a_short_outage(moto, options, frames, catalog, dask_client):
    store = store_at("ingest-short", options)
    paths = [str(p) for p in frames]
    moto.stop()
    moto.restart_after(OUTAGE_S)
    report = ingest(paths, store, catalog, dask_client)
    assert report.count("ingested") == len(paths) and not report.rejected, report.files
    assert catalog.frames.count_documents({"status": "ingested"}) == len(paths)


# -- server errors and throttling ----------------------------------------------------------
class FaultProxy(ThreadingHTTPServer):
    """Forwards HTTP to moto; the next requests get the queued (status, code) errors."""

    daemon_threads = True

    def __init__(self, upstream_port: int):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream_port = upstream_port
        self.faults: list[tuple[int, str]] = []
        self.requests: list[tuple[str, str, int]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

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
            fault = self.server.faults.pop(0) if self.server.faults else None
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

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward


@pytest.fixture
def proxy(moto, options):
    server = FaultProxy(moto.port)
    yield server
    server.shutdown()
    server.server_close()


def proxied(options, proxy, prefix, policy=None) -> Store:
    return store_at(prefix, {**options, "client_kwargs": {"endpoint_url": proxy.endpoint}},
                    policy)


def test_server_errors_and_throttling_are_retried(options, proxy):
    store = proxied(options, proxy, "errors")
    proxy.faults = [(503, "SlowDown"), (500, "InternalError"), (503, "ServiceUnavailable")]
    assert store.put_raw(b"abc" * 1000, "raw/z/a.fits", "0" * 64) == "uploaded"
    statuses = [status for _, _, status in proxy.requests]
    assert statuses[:4] == [503, 500, 503, 200], proxy.requests
    with store.open("raw/z/a.fits") as f:
        assert f.read() == b"abc" * 1000


def test_persistent_server_errors_give_up_after_the_attempts(options, proxy):
    store = proxied(options, proxy, "errors-long", SHORT_POLICY)
    proxy.faults = [(503, "SlowDown")] * 50
    with pytest.raises(StoreUnavailable) as err:
        store.exists("raw/z/b.fits")
    assert len(proxy.requests) == 3, proxy.requests         # total_max_attempts = 3
    assert "raw/z/b.fits" in str(err.value) and is_transient(err.value)


def test_access_denied_is_not_retried_nor_an_outage(options, proxy):
    store = proxied(options, proxy, "denied")
    proxy.faults = [(403, "AccessDenied")]
    with pytest.raises(PermissionError):
        store.exists("raw/z/c.fits")
    assert len(proxy.requests) == 1, proxy.requests
