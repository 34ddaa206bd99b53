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

import time

import numpy as np
import pytest
import s3fs
from s3_fixtures import BUCKET, FaultProxy, Moto, proxied, store_at

from pipeline.io import TessFileError, read, read_info
from pipeline.simulate import simulate
from pipeline.stages.ingest import ingest, plan_ingest
from pipeline.store import Cube, Store, StoreUnavailable, is_transient
from pipeline.store.retry import ATTEMPTS, worst_case_backoff

OUTAGE_S = 2.0
SHORT_POLICY = {"retries": {"mode": "standard", "total_max_attempts": 3}}  # waits ≤ 1 + 2 s


@pytest.fixture(scope="module")
def moto():
    server = Moto()
    server.start()
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem(key="testing", secret="testing",
                           client_kwargs={"endpoint_url": server.endpoint})
    fs.makedirs(BUCKET, exist_ok=True)   # moto keeps its state per process
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
            # zarr's own reads name the object (pipeline.store.guarded)
            ("reading", lambda: cube.extend([1.0], [1], [0]), f"{cube.key}/zarr.json"),
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
@pytest.fixture
def proxy(moto, options):
    server = FaultProxy(moto.port)
    yield server
    server.shutdown()
    server.server_close()


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


@pytest.mark.slow
def test_raw_copies_failing_are_an_outage_not_bad_files(options, proxy, frames, catalog,
                                                        dask_client):
    """Only the raw-zone copies fail (a partial outage, past the retries): the ingest
    fails with StoreUnavailable naming the object; no file is rejected as bad."""
    store = proxied(options, proxy, "raw-outage", SHORT_POLICY)
    proxy.fail_matching(r"^PUT /.*/raw/")
    with pytest.raises(StoreUnavailable) as err:
        ingest([str(p) for p in frames], store, catalog, dask_client)
    assert "/raw-outage" in str(err.value) and "raw/" in str(err.value)
    assert catalog.rejections() == []
    proxy.end_outage()
    report = ingest([str(p) for p in frames], store, catalog, dask_client)
    assert not report.rejected and catalog.rejections() == []
    assert catalog.frames.count_documents({"status": "ingested"}) == len(frames)
