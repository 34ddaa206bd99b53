"""Real services for the tests: nx-27017 (MongoDB wire protocol over TCP), moto's S3
server, and a distributed LocalCluster. Each is started once per session on a free
loopback port; tests get fresh databases and buckets so they never see each other."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

from cluster_fixtures import local_client

import pytest

from pipeline.catalog import Catalog, EmbeddedMongo

logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto logs every request

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tess"


@pytest.fixture(scope="session")
def tess_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real TESS test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory):
    with EmbeddedMongo(tmp_path_factory.mktemp("catalog")) as server:
        yield server


@pytest.fixture
def catalog(mongo_server):
    cat = Catalog(mongo_server.url, database=f"test_{uuid.uuid4().hex[:12]}")
    cat.ensure_indexes()
    yield cat
    cat.client.drop_database(cat.db.name)
    cat.client.close()


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_settings(s3_server, monkeypatch):
    """Settings for a fresh bucket on the moto server (dummy credentials)."""
    import s3fs

    from pipeline.config import Settings

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"tess-{uuid.uuid4().hex[:10]}"
    settings = Settings(store=f"s3://{bucket}/pipeline", s3_endpoint=s3_server,
                        s3_key="testing", s3_secret="testing")
    fs = s3fs.S3FileSystem(**settings.storage_options)
    fs.mkdir(bucket)
    yield settings
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="session")
def dask_client():
    with local_client(2) as client:
        yield client
