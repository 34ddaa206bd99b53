import pymongo
import pytest

from pipeline.catalog import Catalog, EmbeddedMongo, connect
from pipeline.config import Settings


def _frame(name, cadenceno, **extra):
    return {"file": name, "cadenceno": cadenceno, "sector": 14, "camera": 2, "ccd": 3,
            "status": "ingested", **extra}


def test_indexes_declared(catalog):
    names = {tuple(k for k, _ in spec["key"]) for spec in catalog.frames.index_information().values()}
    assert ("file", "cadenceno") in names
    # nx-27017 reports index directions/types as 1 (a known quirk), so compare fields.
    aperture_fields = {tuple(k for k, _ in spec["key"])
                       for spec in catalog.apertures.index_information().values()}
    assert {("position",), ("sector", "camera", "ccd", "label")} <= aperture_fields


def test_frames_unique_and_upsert_replaces(catalog):
    assert catalog.upsert_frames([_frame("a.fits", 1, quality=0), _frame("b.fits", 2)]) == 2
    assert catalog.upsert_frames([_frame("a.fits", 1, quality=32)]) == 0
    assert catalog.frames.count_documents({}) == 2
    assert catalog.frames.find_one({"file": "a.fits"})["quality"] == 32
    with pytest.raises(pymongo.errors.DuplicateKeyError):
        catalog.frames.insert_one({"file": "b.fits", "cadenceno": 2})


def test_rejection_recorded_then_cleared_by_success(catalog):
    catalog.record_rejection("c.fits", "truncated", "c.fits: truncated: 10 bytes short")
    catalog.record_rejection("c.fits", "truncated", "c.fits: truncated: 10 bytes short")
    assert [r["problem"] for r in catalog.rejections()] == ["truncated"]
    catalog.upsert_frames([_frame("c.fits", 7)])
    assert catalog.rejections() == []
    assert catalog.ingested_files(["c.fits", "zzz.fits"]) == {"c.fits": None}


def test_embedded_server_keeps_data_across_restart(tmp_path):
    db = tmp_path / "cat"
    with EmbeddedMongo(db) as server:
        pymongo.MongoClient(server.url).tess.frames.insert_one({"file": "x", "cadenceno": 1})
    assert not server.alive()
    with EmbeddedMongo(db) as server:
        assert pymongo.MongoClient(server.url).tess.frames.count_documents({"file": "x"}) == 1


def test_connect_starts_embedded_server_in_store_folder(tmp_path):
    cat = connect(Settings(store=str(tmp_path / "store")))
    try:
        assert cat.server is not None and cat.server.alive()
        assert (tmp_path / "store" / "catalog" / "tess.db").exists()
        cat.ping()
    finally:
        cat.close()
    assert not cat.server.alive()


def test_databases_are_isolated(mongo_server):
    client = pymongo.MongoClient(mongo_server.url)
    client.iso_a.frames.insert_one({"file": "only-in-a"})
    assert client.iso_b.frames.count_documents({}) == 0
    client.drop_database("iso_a")
    client.drop_database("iso_b")


def test_connect_uses_configured_url(mongo_server):
    cat = connect(Settings(mongo_url=mongo_server.url))
    try:
        assert cat.server is None and cat.url == mongo_server.url
        cat.ping()
    finally:
        cat.close()
    assert mongo_server.alive()  # closing a client never stops a server it did not start


def test_in_memory_server_leaves_no_trace(tmp_path):
    """The server deletes its pid file on exit; it must never be handed a shared path
    (it once was /dev/null, which a root process then removed)."""
    import os
    import stat

    with EmbeddedMongo("memory") as server:
        scratch = server._scratch
        assert os.path.exists(server.pid_path)
        pymongo.MongoClient(server.url).tess.frames.insert_one({"file": "x"})
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert not os.path.exists(scratch)


def test_find_rides_out_a_server_restart(tmp_path):
    """A query sent while the server is down is sent again once it is back (single
    operations already were; a ``find`` cursor is retried until its first batch)."""
    import threading
    import time

    server = EmbeddedMongo(tmp_path / "cat")
    port = server.port
    cat = Catalog(server.url, timeout_ms=300)
    try:
        cat.upsert_frames([_frame(f"f{i}.fits", i) for i in range(30)])
        server.stop()

        def restart():
            time.sleep(1.5)
            nonlocal server
            server = EmbeddedMongo(tmp_path / "cat", port=port)

        thread = threading.Thread(target=restart)
        thread.start()
        cursor = cat.frames.find({"status": {"$eq": "ingested"}}, {"_id": 0}).sort("cadenceno", -1).limit(7)
        found = [d["cadenceno"] for d in cursor]
        thread.join()
        assert found == list(range(29, 22, -1))
        with cat.frames.find({}) as again:
            assert len(list(again)) == 30
    finally:
        cat.client.close()
        server.stop()


def test_a_shorter_retry_deadline_gives_up_sooner(tmp_path):
    """The API's view of the catalog (``with_retry_deadline``) shares the connection
    and answers "unavailable" within its deadline instead of the pipeline's minute."""
    import time

    from pipeline.catalog.retry import DEADLINE, CatalogUnavailable

    server = EmbeddedMongo(tmp_path / "cat")
    cat = Catalog(server.url, timeout_ms=200)
    quick = cat.with_retry_deadline(1.0)
    try:
        assert quick.client is cat.client and cat.retry_deadline == DEADLINE
        cat.upsert_frames([_frame("a.fits", 1)])
        assert quick.frames.count_documents({}) == 1
        server.stop()
        for call in (lambda: quick.frames.count_documents({}), lambda: list(quick.frames.find({}))):
            started = time.monotonic()
            with pytest.raises(CatalogUnavailable, match="unreachable for 1 s"):
                call()
            assert time.monotonic() - started < 5.0
    finally:
        cat.client.close()
        server.stop()
