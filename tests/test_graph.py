"""The whole run as one Dask graph and the jobs that follow it (real nx-27017, a real
LocalCluster, simulated SPOC frames)."""

from __future__ import annotations

import numpy as np
import pytest

import pipeline
from pipeline.cli import main as cli
from pipeline.config import Settings
from pipeline.graph import JobFailed, request_cancel
from pipeline.lightcurves import load_lightcurve
from pipeline.simulate import simulate
from pipeline.stages.apertures import run_apertures
from pipeline.stages.background import run_background
from pipeline.stages.ingest import ingest
from pipeline.stages.lightcurves import run_lightcurves
from pipeline.store import Cube, Store

CUBE = "s0022-2-1"


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    out = tmp_path_factory.mktemp("graph-frames")
    simulate(out, frames=10, size=128, camera=2, ccd=1, sector=22, cadence=1800.0, seed=11)
    (out / "broken_ffic.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 50)
    return out


def test_one_graph_runs_every_stage_and_matches_the_stages_run_alone(frames, tmp_path, catalog,
                                                                    mongo_server, dask_client):
    store = Store(str(tmp_path / "graph"))
    job = pipeline.submit([str(frames)], client=dask_client, store=store, catalog=catalog)
    report = job.result(timeout=300)
    assert job.status() == "done"
    progress = job.progress()
    assert set(progress) >= {"scan", "ingest", "background", "apertures", "lightcurves"}
    assert all(p["done"] == p["total"] > 0 for p in progress.values())
    assert list(report.cubes) == [CUBE]
    assert report.ingest.count("ingested") == 10 and len(report.ingest.rejected) == 2
    run = report.cubes[CUBE]
    assert run.background.frames == 10
    assert run.apertures.n_apertures > 5
    assert run.lightcurves.written == run.apertures.n_apertures

    doc = catalog.jobs.find_one({"_id": job.id})
    assert doc["status"] == "done" and doc["error"] is None
    assert doc["progress"] == progress
    assert doc["counts"]["files_accepted"] == 10 and doc["counts"]["files_rejected"] == 2
    assert doc["counts"]["lightcurves"] == run.lightcurves.written
    assert {r["file"] for r in doc["rejected"]} == {"broken_ffic.fits", "truth.fits"}
    assert all(r["reason"] for r in doc["rejected"])
    assert set(doc["timings"]) >= {"plan", "ingest", "background", "apertures", "lightcurves", "total"}
    assert doc["cubes"] == [CUBE] and doc["scheduler"] == dask_client.scheduler.address

    # the same pixels through the stage functions, one after the other, give the same results
    other = catalog.client[f"{catalog.db.name}_stages"]
    from pipeline.catalog import Catalog
    alone = Catalog(mongo_server.url, database=other.name)
    alone.ensure_indexes()
    try:
        store2 = Store(str(tmp_path / "stages"))
        ingest([str(p) for p in sorted(frames.glob("tess*_ffic.fits"))], store2, alone, dask_client)
        run_background(store2, CUBE, dask_client)
        aps = run_apertures(store2, alone, CUBE, dask_client)
        run_lightcurves(store2, alone, CUBE, dask_client)
        assert aps.n_apertures == run.apertures.n_apertures
        for name in ("background", "sumimage", "pixel_flags"):
            np.testing.assert_array_equal(Cube(store, CUBE).group("r")[name][...],
                                          Cube(store2, CUBE).group("r")[name][...])
        label = sorted(alone.lightcurves.distinct("label"))[len(aps.by_tile) // 2]
        a, b = load_lightcurve(catalog, 22, 2, 1, label), load_lightcurve(alone, 22, 2, 1, label)
        np.testing.assert_array_equal(a.flux, b.flux)
    finally:
        alone.client.drop_database(other.name)


def test_rerun_replaces_and_never_duplicates(frames, tmp_path, catalog, dask_client):
    store = Store(str(tmp_path / "store"))
    first = pipeline.submit([str(frames)], client=dask_client, store=store, catalog=catalog).result(300)
    n_ap = catalog.apertures.count_documents({})
    n_lc = catalog.lightcurves.count_documents({})
    n_frames = catalog.frames.count_documents({"status": "ingested"})
    again = pipeline.submit([str(frames)], client=dask_client, store=store, catalog=catalog)
    second = again.result(300)
    assert second.ingest.count("duplicate") == 10 and second.ingest.count("ingested") == 0
    assert list(second.cubes) == [CUBE]       # the cube of the duplicates is looked at again...
    run = second.cubes[CUBE]                  # ... and what the first run finished is reused
    assert run.background.reused and "reused" in run.apertures.timings
    assert run.lightcurves.reused_tiles == len({t.tile for t in first.cubes[CUBE].lightcurves.tiles})
    assert again.progress()["background"] == {"done": 0, "total": 0, "reused": 1}
    assert catalog.apertures.count_documents({}) == n_ap == first.n_apertures
    assert catalog.lightcurves.count_documents({}) == n_lc == second.n_lightcurves
    assert catalog.frames.count_documents({"status": "ingested"}) == n_frames == 10
    # an ingested cube alone, by id, everything redone: replaced, never duplicated
    background_run = Cube(store, CUBE).group("r").attrs["background"]["run"]
    forced = pipeline.submit(cubes=[CUBE], client=dask_client, store=store, catalog=catalog,
                             force=True)
    third = forced.result(300)
    assert third.ingest is None and third.n_lightcurves == n_lc
    assert not third.cubes[CUBE].background.reused and third.cubes[CUBE].lightcurves.reused_tiles == 0
    assert Cube(store, CUBE).group("r").attrs["background"]["run"] != background_run
    assert third.cubes[CUBE].apertures.run != first.cubes[CUBE].apertures.run
    assert catalog.apertures.count_documents({}) == n_ap
    assert catalog.lightcurves.count_documents({}) == n_lc
    assert catalog.jobs.count_documents({"status": "done"}) == 3
    counts = catalog.jobs.find_one({"_id": forced.id})["counts"]
    assert counts["reused"] == {"background": 0, "apertures": 0, "lightcurve_tiles": 0}


def test_failures_and_cancellation_end_in_the_job_document(frames, tmp_path, catalog, dask_client):
    store = Store(str(tmp_path / "store"))
    bad = pipeline.submit(cubes=["s0099-1-1"], client=dask_client, store=store, catalog=catalog)
    with pytest.raises(JobFailed, match="s0099-1-1"):
        bad.result(60)
    doc = catalog.jobs.find_one({"_id": bad.id})
    assert doc["status"] == "failed" and "no cube s0099-1-1" in doc["error"]
    assert not request_cancel(catalog, bad.id)          # finished jobs are not cancelled

    # another process asks to cancel (the API's DELETE /jobs/{id}) before the graph runs
    job = pipeline.submit([str(frames)], client=dask_client, store=store, catalog=catalog)
    assert request_cancel(catalog, job.id)
    assert job.wait(120) == "cancelled"
    doc = catalog.jobs.find_one({"_id": job.id})
    assert doc["status"] == "cancelled" and "cancelled" in doc["error"]
    assert catalog.lightcurves.count_documents({}) == 0

    with pytest.raises(ValueError, match="nothing to run"):
        pipeline.submit([], client=dask_client, store=store, catalog=catalog)


def test_submit_without_a_client_uses_the_configured_scheduler(frames, tmp_path, catalog,
                                                              dask_client):
    settings = Settings(store=str(tmp_path / "store"), scheduler=dask_client.scheduler.address)
    job = pipeline.submit([str(frames)], settings=settings, catalog=catalog)
    assert job.result(300).n_lightcurves > 0
    assert dask_client.status == "running"              # the shared cluster is not closed


def test_run_command_follows_the_job(frames, tmp_path, mongo_server, dask_client, capsys):
    services = ["--store", str(tmp_path / "store"), "--mongo", mongo_server.url,
                "--scheduler", dask_client.scheduler.address]
    assert cli(["run", str(frames)] + services) == 0
    out = capsys.readouterr()
    assert "dashboard:" in out.out and "job:" in out.out and "<RunReport" in out.out
    assert "lightcurves" in out.err                    # the per-stage progress bars
    assert cli(["run", "--cube", "s0098-1-1"] + services) == 1
    assert "no cube s0098-1-1" in capsys.readouterr().err
    assert cli(["run"] + services) == 2


def test_two_runs_of_the_same_ccd_at_once_serialise(frames, tmp_path, catalog, dask_client):
    """Submitted together, the second waits for the first's cube lease, then finds every
    file ingested: no cadence is appended twice, no document is duplicated."""
    store = Store(str(tmp_path / "store"))
    jobs = [pipeline.submit([str(frames)], client=dask_client, store=store, catalog=catalog)
            for _ in range(2)]
    reports = [job.result(300) for job in jobs]
    assert sorted(r.ingest.count("ingested") for r in reports) == [0, 10]
    assert sorted(r.ingest.count("duplicate") for r in reports) == [0, 10]
    assert Cube(store, CUBE).group("r")["flux"].shape[0] == 10
    assert catalog.frames.count_documents({"status": "ingested"}) == 10
    n = reports[0].cubes[CUBE].apertures.n_apertures
    assert catalog.apertures.count_documents({}) == n == catalog.lightcurves.count_documents({})
    assert catalog.db["leases"].count_documents({}) == 0          # released at the end


def test_lease_is_exclusive_and_taken_over_when_its_holder_died(catalog):
    from pipeline.catalog.leases import LeaseTimeout, holder, leases, try_acquire

    with leases(catalog, ["cube:a", "cube:b"], "job-1", ttl=30):
        assert holder(catalog, "cube:a") == "job-1"
        assert not try_acquire(catalog, "cube:b", "job-2")
        with pytest.raises(LeaseTimeout, match="cube:b is held by job-1"):
            with leases(catalog, ["cube:b"], "job-2", timeout=0.3, poll=0.1):
                pass
    assert holder(catalog, "cube:a") is None
    assert try_acquire(catalog, "cube:c", "dead-job", ttl=0.1)       # never renewed
    import time
    time.sleep(0.2)
    assert try_acquire(catalog, "cube:c", "job-3") and holder(catalog, "cube:c") == "job-3"


def test_a_held_lease_is_renewed_past_its_ttl(catalog):
    """A long job keeps its cubes: the heartbeat renews the lease before it expires."""
    import time

    from pipeline.catalog.leases import holder, leases, try_acquire

    with leases(catalog, ["cube:x"], "job-1", ttl=0.6):
        time.sleep(1.5)                       # 2.5 ttls
        assert holder(catalog, "cube:x") == "job-1"
        assert not try_acquire(catalog, "cube:x", "job-2")


def test_progress_never_counts_past_the_total():
    """A task run again after its worker died announces itself twice."""
    from pipeline.cluster import StageProgress

    progress = StageProgress()
    progress.expect("background", 2)
    for _ in range(3):
        progress._on_event((0.0, {"stage": "background"}))
    assert progress.snapshot()["background"] == {"done": 2, "total": 2}
    progress.reuse("apertures")
    assert progress.snapshot()["apertures"] == {"done": 0, "total": 0, "reused": 1}
    assert "apertures" in progress.finished_at        # nothing of it is left to run


def test_targets_only_keeps_the_light_curves_of_catalog_stars(frames, tmp_path, catalog,
                                                             dask_client):
    from astropy.table import Table

    from pipeline.simulate import geometry, load_truth

    store = Store(str(tmp_path / "store"))
    everything = pipeline.submit([str(frames)], client=dask_client, store=store,
                                 catalog=catalog).result(300)
    truth = load_truth(frames / "truth.fits")
    bright = truth.stars[np.asarray(truth.stars["tmag"]) <= 13.0]
    wcs = geometry.wcs(128, 22, 2, 1).slice((slice(0, 128), slice(44, 44 + 128)))
    ra, dec = wcs.all_pix2world(np.asarray(bright["col"], float), np.asarray(bright["row"], float), 0)
    stars = Table({"id": np.arange(len(bright)), "ra": ra, "dec": dec,
                   "tmag": np.asarray(bright["tmag"], float)})
    targets = pipeline.submit(cubes=[CUBE], client=dask_client, store=store, catalog=catalog,
                              stars=stars, targets_only=True).result(300)
    matched = catalog.apertures.count_documents({"star": {"$ne": None}})
    assert 0 < matched < everything.n_apertures
    assert targets.n_lightcurves == matched == catalog.lightcurves.count_documents({})
    with pytest.raises(ValueError, match="star catalog"):
        pipeline.submit(cubes=[CUBE], client=dask_client, store=store, catalog=catalog,
                        targets_only=True)


def test_light_curves_are_measured_while_the_apertures_are_written(frames, tmp_path, catalog,
                                                                  dask_client):
    """The light-curve tiles need only the aperture documents, so they do not wait for
    the catalog write (a full CCD's is seconds of serial work); the stage's last task
    does, so a run ends with its light curves' apertures in the catalog."""
    from dask.core import get_dependencies

    from pipeline.graph import build_graph

    store = Store(str(tmp_path / "store"))
    ingest([str(p) for p in sorted(frames.glob("tess*_ffic.fits"))], store, catalog, dask_client)
    run = build_graph(store, catalog, [CUBE])
    tasks = dict(run.__dask_graph__())

    def named(prefix):
        return [k for k in tasks if str(k).startswith(prefix)]

    def upstream(key, seen=None):
        seen = set() if seen is None else seen
        for dep in get_dependencies(tasks, key):
            if dep not in seen:
                seen.add(dep)
                upstream(dep, seen)
        return seen

    (write,) = named("apertures-write-")
    (documents,) = named("apertures-documents-")
    (finish,) = named("lightcurves-finish-")
    tiles = named("lightcurves-tile-")
    assert tiles and all(documents in upstream(t) and write not in upstream(t) for t in tiles)
    assert write in upstream(finish)

    report = dask_client.compute(run).result(300)
    stored = report.cubes[CUBE].apertures
    assert stored.write_mode in ("transaction", "upsert")
    assert catalog.apertures.count_documents({"cube": {"$eq": CUBE}}) == stored.n_apertures
    assert report.n_lightcurves == stored.n_apertures
    assert set(catalog.lightcurves.distinct("label")) == set(catalog.apertures.distinct("label"))
