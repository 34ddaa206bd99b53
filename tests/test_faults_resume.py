"""A store outage longer than the retries, across a whole submitted run (issue #8): the
job fails with a clear error and a resumable state; ``pipeline.resume`` finishes it
without redoing finished work and without duplicating a document.

The S3 server is moto behind a fault-injecting proxy (``s3_fixtures``). The first
outage is tied to what the pipeline does — it starts right after the first read of
the sum image, i.e. in the aperture stage — so it always hits the same place; the
second starts as soon as the first light-curve tile is finished. The cluster has one
single-threaded worker, so tiles finish one at a time.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import s3fs
from cluster_fixtures import local_client
from s3_fixtures import BUCKET, FaultProxy, Moto, proxied

import pipeline
from pipeline import checkpoints
from pipeline.catalog import match
from pipeline.simulate import simulate
from pipeline.store import Cube, Store

CUBE = "s0022-2-1"
SHORT_POLICY = {"retries": {"mode": "standard", "total_max_attempts": 3}}   # gives up in ≤ 3 s


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    out = tmp_path_factory.mktemp("resume-frames")
    simulate(out, frames=10, size=128, camera=2, ccd=1, sector=22, cadence=1800.0, seed=11)
    return out


@pytest.fixture(scope="module")
def one_worker():
    with local_client(1) as client:
        yield client


@pytest.fixture
def proxy(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    moto = Moto()
    moto.start()
    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem(key="testing", secret="testing",
                      client_kwargs={"endpoint_url": moto.endpoint}).makedirs(BUCKET, exist_ok=True)
    server = FaultProxy(moto.port)
    yield server
    server.shutdown()
    server.server_close()
    moto.stop()


def executing(dask_worker) -> int:
    return len(dask_worker.state.executing)


def lightcurves(catalog) -> dict:
    return {d["label"]: d for d in catalog.lightcurves.find({})}


def test_a_long_outage_fails_the_job_and_resume_finishes_it(frames, proxy, tmp_path, catalog,
                                                            mongo_server, one_worker):
    from pipeline.catalog import Catalog
    from pipeline.lightcurves import load_lightcurve

    options = {"key": "testing", "secret": "testing"}
    store = proxied(options, proxy, "resume", SHORT_POLICY)
    inputs = [str(p) for p in sorted(frames.glob("*_ffic.fits"))]

    # the reference: the same run, undisturbed, on a local store
    reference = Catalog(mongo_server.url, database=catalog.db.name + "_ref")
    reference.ensure_indexes()
    try:
        pipeline.submit(inputs, client=one_worker, store=Store(str(tmp_path / "local")),
                        catalog=reference).result(300)
        expected = {label: load_lightcurve(reference, 22, 2, 1, label) for label in
                    lightcurves(reference)}
    finally:
        reference.client.drop_database(reference.db.name)

    # 1. the store goes down in the aperture stage, for longer than the retries
    proxy.outage_after(r"^GET /.*/sumimage/c/", 1)      # its first chunk read
    first = pipeline.submit(inputs, client=one_worker, store=store, catalog=catalog)
    assert first.wait(300) == "failed"
    doc = catalog.jobs.find_one(match(_id=first.id))
    assert doc["status"] == "failed" and bool(doc["resumable"])
    assert doc["error"].startswith(f"StoreUnavailable: store s3://{BUCKET}/resume unavailable "
                                   f"while reading 'staging/{CUBE}.zarr/"), doc["error"]
    assert "gave up after 3 attempts" in doc["error"]
    assert f"tess-pipeline resume {first.id}" in doc["error"], doc["error"]
    assert catalog.frames.count_documents({"status": "ingested"}) == 10
    assert catalog.rejections() == []                      # an outage is no bad file
    assert catalog.apertures.count_documents({}) == 0 == catalog.lightcurves.count_documents({})
    proxy.end_outage()
    background_run = Cube(store, CUBE).group("r").attrs["background"]["run"]

    # 2. resumed: the background is not redone; the store goes down after the first tile
    second = pipeline.resume(first.id, client=one_worker, store=store, catalog=catalog)
    deadline = time.time() + 300
    while checkpoints.finished(catalog, checkpoints.LIGHTCURVES) == 0:
        assert second.status() in ("queued", "running") and time.time() < deadline, second.error
        time.sleep(0.02)
    proxy.down = True
    assert second.wait(300) == "failed", "every tile finished before the outage began"
    assert second.progress()["background"] == {"done": 0, "total": 0, "reused": 1}
    assert catalog.jobs.find_one(match(_id=first.id))["resumed_by"] == second.id
    proxy.end_outage()
    while any(one_worker.run(executing).values()):   # a tile running when it failed ends
        time.sleep(0.05)
    finished_tiles = checkpoints.finished(catalog, checkpoints.LIGHTCURVES)
    written_before = {label: d["created"] for label, d in lightcurves(catalog).items()}
    assert finished_tiles >= 1 and written_before

    # 3. resumed again: only the unfinished tiles are measured
    third = pipeline.resume(second.id, client=one_worker, store=store, catalog=catalog)
    report = third.result(300)
    run = report.cubes[CUBE]
    assert report.ingest.count("duplicate") == 10 and report.ingest.count("ingested") == 0
    assert run.background.reused and Cube(store, CUBE).group("r").attrs["background"]["run"] == background_run
    assert "reused" in run.apertures.timings
    assert run.lightcurves.reused_tiles == finished_tiles
    now = lightcurves(catalog)
    rewritten = [label for label, created in written_before.items() if now[label]["created"] != created]
    assert rewritten == [], f"light curves of finished tiles measured again: {rewritten}"
    counts = catalog.jobs.find_one(match(_id=third.id))["counts"]
    assert counts["reused"] == {"background": 1, "apertures": 1, "lightcurve_tiles": finished_tiles}

    # nothing lost, nothing twice, the same light curves as the undisturbed run
    assert catalog.lightcurves.count_documents({}) == len(now) == len(expected)
    assert catalog.frames.count_documents({"status": "ingested"}) == 10
    assert Cube(store, CUBE).group("r")["flux"].shape[0] == 10
    for label, doc in now.items():
        got = load_lightcurve(catalog, 22, 2, 1, label)
        assert np.array_equal(got.flux, expected[label].flux, equal_nan=True), label

    with pytest.raises(ValueError, match="already resumed"):
        pipeline.resume(first.id, client=one_worker, store=store, catalog=catalog)
    with pytest.raises(ValueError, match="is done"):
        pipeline.resume(third.id, client=one_worker, store=store, catalog=catalog)
