"""Faults during a whole run (one Dask graph): a worker killed mid-run, the catalog
server restarted mid-run. Each run must finish with the results of an undisturbed run
and without a duplicated or missing document."""

from __future__ import annotations

import os
import time
import uuid

import numpy as np
import pytest

import pipeline
from pipeline.catalog import Catalog, EmbeddedMongo
from pipeline.lightcurves import load_lightcurve
from pipeline.simulate import simulate
from pipeline.store import Cube, Store

CUBE = "s0023-3-2"


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    out = tmp_path_factory.mktemp("fault-frames")
    simulate(out, frames=24, size=128, camera=3, ccd=2, sector=23, cadence=1800.0, seed=5)
    (out / "truth.fits").unlink()
    return out


@pytest.fixture(scope="module")
def undisturbed(frames, tmp_path_factory, mongo_server, dask_client):
    catalog = Catalog(mongo_server.url, database=f"ref_{uuid.uuid4().hex[:8]}")
    catalog.ensure_indexes()
    store = Store(str(tmp_path_factory.mktemp("reference") / "store"))
    report = pipeline.submit([str(frames)], client=dask_client, store=store, catalog=catalog).result(300)
    yield store, catalog, report
    catalog.client.drop_database(catalog.db.name)


def _same_results(store, catalog, ref_store, ref_catalog):
    for name in ("flux", "background", "pixel_flags", "sumimage"):
        np.testing.assert_array_equal(Cube(store, CUBE).group("r")[name][...],
                                      Cube(ref_store, CUBE).group("r")[name][...])
    labels = sorted(catalog.lightcurves.distinct("label"))
    assert labels == sorted(ref_catalog.lightcurves.distinct("label"))
    assert catalog.lightcurves.count_documents({}) == len(labels)
    assert catalog.apertures.count_documents({}) == len(labels)
    assert catalog.frames.count_documents({}) == ref_catalog.frames.count_documents({})
    for label in labels[:: max(1, len(labels) // 5)]:
        a, b = load_lightcurve(catalog, 23, 3, 2, label), load_lightcurve(ref_catalog, 23, 3, 2, label)
        np.testing.assert_array_equal(a.flux, b.flux)
        np.testing.assert_array_equal(a.quality, b.quality)


def _wait_for(job, stage: str, timeout: float = 120.0) -> None:
    started = time.monotonic()
    while job.progress().get(stage, {}).get("done", 0) < 1:
        assert job.status() in ("queued", "running"), job.status()
        assert time.monotonic() - started < timeout, f"{stage} never started: {job}"
        time.sleep(0.05)


def _raw_zone(store) -> dict:
    return {key.rsplit("/", 1)[-1]: info["size"] for key, info in
            store.fs.find(store.path("raw"), detail=True).items()}


@pytest.mark.parametrize("stage", ["background", "lightcurves"])
def test_a_worker_killed_mid_run_changes_nothing(frames, tmp_path, catalog, undisturbed, stage):
    from pipeline.cluster import local

    client = local(n_workers=2)
    try:
        store = Store(str(tmp_path / "store"))
        job = pipeline.submit([str(frames)], client=client, store=store, catalog=catalog)
        _wait_for(job, stage)
        # the worker holding the ingest's result, while it is held: its loss makes the
        # scheduler run the ingest tasks again (which must then find their own work done)
        holders = [w for key, ws in client.who_has().items()
                   if str(key).startswith("ingest-record") for w in ws]
        victim = holders[0] if holders else sorted(client.scheduler_info()["workers"])[0]
        with pytest.raises(Exception):        # noqa: B017 - the worker dies under the call
            client.run(os._exit, 1, workers=[victim])
        report = job.result(300)
        assert job.status() == "done" and report.n_lightcurves == undisturbed[2].n_lightcurves
        assert all(p["done"] == p["total"] for p in job.progress().values())
        assert catalog.rejections() == []     # a replayed ingest task is no bad file
        assert _raw_zone(store) == _raw_zone(undisturbed[0])
        _same_results(store, catalog, undisturbed[0], undisturbed[1])
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()


@pytest.mark.parametrize("stage", ["background", "lightcurves"])   # reads / bulk writes
def test_the_catalog_server_restarted_mid_run_loses_and_duplicates_nothing(frames, tmp_path,
                                                                           dask_client, undisturbed,
                                                                           stage):
    data = tmp_path / "catalog"
    server = EmbeddedMongo(data)
    port = server.port
    catalog = Catalog(server.url)
    catalog.ensure_indexes()
    try:
        store = Store(str(tmp_path / "store"))
        job = pipeline.submit([str(frames)], client=dask_client, store=store, catalog=catalog)
        _wait_for(job, stage)
        server.stop()
        time.sleep(2.0)                        # down while tasks and the watcher write
        server = EmbeddedMongo(data, port=port)
        report = job.result(300)
        assert job.status() == "done" and report.n_lightcurves == undisturbed[2].n_lightcurves
        assert catalog.jobs.find_one({"_id": job.id})["status"] == "done"
        _same_results(store, catalog, undisturbed[0], undisturbed[1])
    finally:
        catalog.client.close()
        server.stop()
