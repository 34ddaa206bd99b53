"""The pipeline on a real S3 server: ingest → background → apertures → light curves (the
stage functions, on a LocalCluster) against Ceph's RADOS Gateway and nx-27017, and the
same run against a local folder store: the cube arrays, the raw originals, the
apertures and the light curves must be identical — and the HTTP API on the gateway's
store must serve them.
"""

from __future__ import annotations

import hashlib
import io
import uuid

import numpy as np
import pytest
import s3fs

from pipeline.catalog import Catalog
from pipeline.lightcurves.documents import decode_document
from pipeline.simulate import simulate
from pipeline.stages.apertures import run_apertures
from pipeline.stages.background import run_background
from pipeline.stages.ingest import ingest
from pipeline.stages.lightcurves import run_lightcurves
from pipeline.store import Cube, Store

SIZE, FRAMES, SECTOR, CAMERA, CCD, SEED = 64, 24, 22, 2, 2, 11
CUBE = f"s{SECTOR:04d}-{CAMERA}-{CCD}"
CUBE_ARRAYS = ("flux", "flux_err", "background", "pixel_flags", "sumimage", "time",
               "cadenceno", "quality")
SERIES = ("time", "cadenceno", "flux", "flux_err", "flux_bkg", "quality", "centroid_row",
          "centroid_col")


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    sim = simulate(tmp_path_factory.mktemp("it-sim"), frames=FRAMES, size=SIZE, camera=CAMERA,
                   ccd=CCD, sector=SECTOR, seed=SEED)
    return [str(p) for p in sim.paths]


def fresh_catalog(mongo_server) -> Catalog:
    catalog = Catalog(mongo_server.url, database=f"it_{uuid.uuid4().hex[:12]}")
    catalog.ensure_indexes()
    return catalog


def run_pipeline(paths, store: Store, catalog: Catalog, client) -> dict:
    """Every stage, then what it left in the store and the catalog."""
    report = ingest(paths, store, catalog, client)
    assert report.count("ingested") == len(paths) and not report.rejected, report.files
    run_background(store, CUBE, client)
    apertures = run_apertures(store, catalog, CUBE, client)
    lightcurves = run_lightcurves(store, catalog, CUBE, client)
    assert lightcurves.written > 0, (apertures, lightcurves)
    group = Cube(store, CUBE).group("r")
    raw_root = store.path("raw")
    return {
        "arrays": {name: group[name][...] for name in CUBE_ARRAYS},
        "raw": {key[len(raw_root):]: hashlib.sha256(store.fs.cat_file(key)).hexdigest()
                for key in store.fs.find(raw_root)},
        "apertures": {d["label"]: (sorted(map(tuple, d["pixels"])), d["flux"])
                      for d in catalog.apertures.find({"cube": CUBE}, {"_id": 0})},
        "lightcurves": {d["label"]: decode_document(d)
                        for d in catalog.lightcurves.find({"cube": CUBE}, {"_id": 0})},
    }


@pytest.fixture(scope="module")
def local_run(frames, tmp_path_factory, mongo_server, dask_client):
    catalog = fresh_catalog(mongo_server)
    store = Store(str(tmp_path_factory.mktemp("it-local")))
    yield run_pipeline(frames, store, catalog, dask_client)
    catalog.client.drop_database(catalog.db.name)


@pytest.fixture(scope="module")
def rgw_run(frames, rgw, mongo_server, dask_client):
    """The same run with the store on the gateway: (settings, store, catalog, results)."""
    bucket = f"tess-it-{uuid.uuid4().hex[:10]}"
    settings = rgw.settings(bucket)
    s3fs.S3FileSystem.clear_instance_cache()
    s3fs.S3FileSystem(**settings.storage_options).mkdir(bucket)
    store = Store.from_settings(settings)
    catalog = fresh_catalog(mongo_server)
    yield settings, store, catalog, run_pipeline(frames, store, catalog, dask_client)
    catalog.client.drop_database(catalog.db.name)


def test_pipeline_on_rgw_equals_local_store(frames, local_run, rgw_run, rgw):
    settings, store, _, remote = rgw_run
    bucket = settings.store.split("/")[2]
    # it really went to the gateway: a client of its own sees the cube and the originals
    fs = s3fs.S3FileSystem(key=rgw.key, secret=rgw.secret, skip_instance_cache=True,
                           client_kwargs={"endpoint_url": rgw.endpoint})
    assert fs.exists(f"{bucket}/pipeline/staging/{CUBE}.zarr/zarr.json")
    assert len(fs.find(f"{bucket}/pipeline/raw")) == len(frames)

    assert remote["raw"] == local_run["raw"]
    for name in CUBE_ARRAYS:
        np.testing.assert_array_equal(remote["arrays"][name], local_run["arrays"][name],
                                      err_msg=f"cube array {name}")
    assert remote["apertures"] == local_run["apertures"]
    assert len(local_run["apertures"]) > 0
    assert sorted(remote["lightcurves"]) == sorted(local_run["lightcurves"])
    for label, mine in remote["lightcurves"].items():
        theirs = local_run["lightcurves"][label]
        for series in SERIES:
            if series in theirs:
                np.testing.assert_array_equal(mine[series], theirs[series],
                                              err_msg=f"light curve {label}: {series}")


def test_api_reads_the_rgw_run(frames, local_run, rgw_run, dask_client):
    """The HTTP API on the gateway's store serves what the local run computed."""
    from fastapi.testclient import TestClient

    from pipeline.api import create_app

    settings, store, catalog, _ = rgw_run
    with TestClient(create_app(settings, client=dask_client, store=store, catalog=catalog)) as api:
        health = api.get("/health")
        assert health.status_code == 200 and health.json()["services"]["store"]["ok"], health.text
        name = frames[0].rsplit("/", 1)[-1]
        key = Store.raw_key(name, SECTOR, CAMERA, CCD)
        original = api.get("/download", params={"key": key})
        assert original.status_code == 200 and original.content == open(frames[0], "rb").read()
        image = api.get(f"/staging/cubes/{CUBE}/image", params={"kind": "flux", "index": 3})
        assert image.status_code == 200, image.text
        assert np.array_equal(np.load(io.BytesIO(image.content)),
                              local_run["arrays"]["flux"][3], equal_nan=True)
        listed = api.get("/curated/lightcurves", params={"sector": SECTOR, "camera": CAMERA,
                                                         "ccd": CCD, "limit": 1000})
        assert listed.status_code == 200, listed.text
        items = listed.json()["items"]
        assert len(items) == len(local_run["lightcurves"])
        for item in items[:5]:
            got = api.get(f"/curated/lightcurves/{item['id']}", params={"format": "json"})
            assert got.status_code == 200, got.text
            want = local_run["lightcurves"][item["label"]]["flux"]
            flux = np.array([np.nan if v is None else v for v in got.json()["flux"]])
            # JSON carries the float32 values in short decimal form
            np.testing.assert_allclose(flux, want.astype(np.float64), rtol=1e-6, atol=0)


def test_large_original_goes_up_in_parts_and_comes_back(rgw, bucket):
    """A full-size FFI is ~35 MB: above s3fs's part size it is a multipart upload, then
    a server-side copy (the rename from .partial) — what moto cannot vouch for."""
    store = Store.from_settings(rgw.settings(bucket))
    blob = np.random.default_rng(2).bytes(60 << 20)
    checksum = hashlib.sha256(blob).hexdigest()
    key = Store.raw_key("tess2019199201929-s0014-2-3-0150-s_ffic.fits", 14, 2, 3)
    assert store.put_raw(blob, key, checksum, name="big.fits") == "uploaded"
    assert store.put_raw(blob, key, checksum, name="big.fits") == "duplicate"
    with store.open(key) as f:
        assert hashlib.sha256(f.read()).hexdigest() == checksum
    assert not store.exists(key + ".partial")
