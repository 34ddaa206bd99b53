"""The seeded API the HTTP tests share (no tests here): a real run on real services —
16 simulated 128×128 FFIs, 14 of them ingested into moto's S3 server and nx-27017,
then background, apertures and light curves on the LocalCluster — served by uvicorn
on a free loopback port. Built once per session (about 10 s) whichever API test
module asks first; the two frames left over are for the upload and job tests."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import httpx
import pytest

API_KEY = "test-key-" + uuid.uuid4().hex
CUBE = "s0014-1-1"
FRAMES = 16
INGESTED = 14


@dataclasses.dataclass
class SeededApi:
    url: str
    http: httpx.Client
    settings: object
    store: object
    catalog: object
    client: object
    app: object
    sim_paths: list[Path]

    @property
    def spare_paths(self) -> list[Path]:
        return self.sim_paths[INGESTED:]

    @property
    def write_headers(self) -> dict:
        return {"X-API-Key": API_KEY}


_SEED: dict = {}


def _import_stages():
    import importlib

    for name in ("ingest_tasks", "background", "apertures", "lightcurves"):
        importlib.import_module(f"pipeline.stages.{name}")


def _build(tmp_path_factory, s3_server, mongo_server, dask_client):
    import s3fs

    from pipeline.api import ServerThread, create_app
    from pipeline.catalog import Catalog
    from pipeline.config import Settings
    from pipeline.simulate import simulate
    from pipeline.stages.apertures import run_apertures
    from pipeline.stages.background import run_background
    from pipeline.stages.ingest import ingest
    from pipeline.stages.lightcurves import run_lightcurves
    from pipeline.store import Store

    # fresh workers spend seconds importing the stages (astropy, numba caches): let them
    # do it while this process simulates the frames
    warming = [dask_client.submit(_import_stages, pure=False, workers=[w], allow_other_workers=False)
               for w in dask_client.scheduler_info()["workers"]]
    sim = simulate(tmp_path_factory.mktemp("api-sim"), frames=FRAMES, size=128, camera=1, ccd=1,
                   sector=14, cadence=1800.0, seed=2)
    bucket = f"tess-api-{uuid.uuid4().hex[:8]}"
    settings = Settings(store=f"s3://{bucket}/pipeline", s3_endpoint=s3_server, s3_key="testing",
                        s3_secret="testing", api_key=API_KEY)
    s3fs.S3FileSystem(**settings.storage_options).mkdir(bucket)
    dask_client.gather(warming)
    store = Store.from_settings(settings)
    catalog = Catalog(mongo_server.url, database=f"test_api_{uuid.uuid4().hex[:10]}")
    catalog.ensure_indexes()
    paths = sorted(Path(p) for p in sim.paths)
    report = ingest([str(p) for p in paths[:INGESTED]], store, catalog, dask_client)
    assert report.count("ingested") == INGESTED, report
    run_background(store, CUBE, dask_client)
    run_apertures(store, catalog, CUBE, dask_client)
    run_lightcurves(store, catalog, CUBE, dask_client)
    app = create_app(settings, dask_client, store=store, catalog=catalog)
    server = ServerThread(app)
    url = server.start()
    http = httpx.Client(base_url=url, timeout=60)
    return SeededApi(url, http, settings, store, catalog, dask_client, app, paths), server


@pytest.fixture(scope="session")
def seeded_api(tmp_path_factory, s3_server, mongo_server, dask_client):
    if "api" not in _SEED:    # one build even when several modules import this fixture
        _SEED["api"], _SEED["server"] = _build(tmp_path_factory, s3_server, mongo_server, dask_client)
        _SEED["users"] = 0
    _SEED["users"] += 1
    yield _SEED["api"]
    _SEED["users"] -= 1
    if _SEED["users"] == 0:
        api = _SEED.pop("api")
        api.http.close()
        _SEED.pop("server").stop()
        api.catalog.client.drop_database(api.catalog.db.name)
        api.catalog.client.close()
