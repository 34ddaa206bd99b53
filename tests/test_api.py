"""The HTTP API through real HTTP: uvicorn on a free loopback port, in front of moto's
S3 server, nx-27017 and a LocalCluster, seeded by a real run (simulated FFIs →
ingest → background → apertures → light curves). Write endpoints, uploads and jobs
are in test_api_write.py; generated requests (Schemathesis) in test_api_schema.py."""

from __future__ import annotations

import hashlib
import io
import math
import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from test_api_support import CUBE, INGESTED, seeded_api  # noqa: F401 - the shared fixture
from pipeline.api import ServerThread, create_app
from pipeline.api.sky import angular_distance
from pipeline.catalog import Catalog

FRAME_KEYS = {"file", "sector", "camera", "ccd", "cadenceno", "time", "date_obs", "quality", "key", "size"}


def all_items(http, path, **params):
    items, token, pages = [], None, 0
    while True:
        r = http.get(path, params={**params, **({"page_token": token} if token else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        pages += 1
        token = body["next_page_token"]
        if token is None:
            return items, pages


# -- service ------------------------------------------------------------------------------------
def test_health_reports_every_service(seeded_api):
    r = seeded_api.http.get("/health")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    for name in ("store", "catalog", "scheduler"):
        assert body["services"][name]["ok"] is True
        assert body["services"][name]["latency_ms"] >= 0
    assert body["services"]["scheduler"]["address"].startswith("tcp://")


def test_health_is_503_when_the_catalog_is_down(seeded_api):
    dead = Catalog("mongodb://127.0.0.1:9/", database="nothing", timeout_ms=300)
    app = create_app(seeded_api.settings, seeded_api.client, store=seeded_api.store, catalog=dead)
    with ServerThread(app) as url:
        import httpx

        r = httpx.get(f"{url}/health", timeout=20)
        r_raw = httpx.get(f"{url}/raw", timeout=20)
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "degraded"
    assert body["services"]["catalog"]["ok"] is False and body["services"]["catalog"]["error"]
    assert body["services"]["store"]["ok"] is True
    assert r_raw.status_code == 503 and "catalog" in r_raw.json()["detail"]


def test_stats(seeded_api):
    body = seeded_api.http.get("/stats").json()
    assert body["zones"]["raw"]["objects"] >= INGESTED
    assert body["zones"]["raw"]["bytes"] > 0
    assert body["zones"]["staging"]["objects"] > 0
    assert set(body["zones"]) == {"raw", "staging", "curated"}
    assert body["collections"]["lightcurves"] == seeded_api.catalog.lightcurves.count_documents({})
    assert {"sector": 14, "camera": 1, "ccd": 1, "count": INGESTED} in body["frames"]
    assert isinstance(body["jobs"], dict)


def test_openapi_docs_and_closed_cors(seeded_api):
    http = seeded_api.http
    assert http.get("/docs").status_code == 200
    paths = http.get("/openapi.json").json()["paths"]
    assert {"/inject", "/raw", "/staging", "/download", "/curated/lightcurves/{id}", "/health", "/stats",
            "/jobs", "/jobs/{id}"} <= set(paths)
    r = http.get("/health", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    pre = http.options("/raw", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in pre.headers


def test_cors_when_configured(seeded_api):
    app = create_app(seeded_api.settings, seeded_api.client, store=seeded_api.store,
                     catalog=seeded_api.catalog, cors_origins=["https://gui.example"])
    with ServerThread(app) as url:
        import httpx

        ok = httpx.get(f"{url}/stats", headers={"Origin": "https://gui.example"})
        other = httpx.get(f"{url}/stats", headers={"Origin": "https://evil.example"})
    assert ok.headers["access-control-allow-origin"] == "https://gui.example"
    assert "access-control-allow-origin" not in other.headers


# -- frames -------------------------------------------------------------------------------------
def test_raw_lists_every_ingested_frame_in_time_order(seeded_api):
    items, _ = all_items(seeded_api.http, "/raw", sector=14, camera=1, ccd=1, limit=5)
    assert len(items) == INGESTED
    assert all(set(i) == FRAME_KEYS for i in items)
    times = [i["time"] for i in items]
    assert times == sorted(times)
    assert all(i["key"].startswith("raw/s0014/1-1/") and i["size"] > 0 for i in items)


def test_raw_filters(seeded_api):
    http = seeded_api.http
    frames = http.get("/raw", params={"limit": 1000}).json()["items"]
    mid = frames[len(frames) // 2]

    def files(**params):
        return [i["file"] for i in http.get("/raw", params={"limit": 1000, **params}).json()["items"]]

    assert files(btjd_from=mid["time"]) == [f["file"] for f in frames if f["time"] >= mid["time"]]
    assert files(btjd_to=mid["time"]) == [f["file"] for f in frames if f["time"] <= mid["time"]]
    assert files(cadence_from=mid["cadenceno"], cadence_to=mid["cadenceno"]) == [mid["file"]]
    assert files(date_from=mid["date_obs"], date_to=mid["date_obs"]) == [mid["file"]]
    day = mid["date_obs"][:10]
    assert files(date_from=day, date_to=day) == [f["file"] for f in frames if f["date_obs"][:10] == day]
    assert files(sector=15) == []
    bad = 1 | 2 | 4 | 8 | 32 | 64 | 128 | 4096
    assert files(good=True) == [f["file"] for f in frames if not f["quality"] & bad]
    assert files(good=False) == [f["file"] for f in frames if f["quality"] & bad]
    q = frames[0]["quality"]
    assert files(quality=q) == [f["file"] for f in frames if f["quality"] == q]


def test_pagination_goes_past_1000_frames(seeded_api):
    """1,100 frame documents on another CCD, 100 of them tying on time with another file."""
    docs = [{"file": f"synthetic-{i:05d}.fits", "cadenceno": i, "sector": 99, "camera": 4, "ccd": 4,
             "time": 3000.0 + (i % 1000) * 0.01, "date_obs": "2030-01-01T00:00:00.000Z", "quality": 0,
             "raw_key": f"raw/s0099/4-4/synthetic-{i:05d}.fits", "size": 1, "status": "ingested",
             "cube": "s0099-4-4", "cube_index": i} for i in range(1100)]
    seeded_api.catalog.frames.insert_many(docs)
    try:
        for limit, expected_pages in ((100, 11), (1000, 2), (333, 4)):
            items, pages = all_items(seeded_api.http, "/staging", sector=99, limit=limit)
            assert pages == expected_pages
            assert sorted(i["file"] for i in items) == sorted(d["file"] for d in docs)
            keys = [(i["time"], i["file"], i["cadenceno"]) for i in items]
            assert keys == sorted(keys)
        http = seeded_api.http
        token = http.get("/raw", params={"sector": 99, "limit": 10}).json()["next_page_token"]
        r = http.get("/raw", params={"sector": 98, "limit": 10, "page_token": token})
        assert r.status_code == 422 and "different query" in r.json()["detail"]
    finally:
        seeded_api.catalog.frames.delete_many({"sector": 99})


@pytest.mark.parametrize("params, where", [
    ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"), ({"sector": "abc"}, "sector"),
    ({"camera": 5}, "camera"), ({"ccd": 0}, "ccd"), ({"btjd_from": "nan"}, "btjd_from"),
    ({"btjd_to": "inf"}, "btjd_to"), ({"cadence_from": -1}, "cadence_from"),
    ({"cadence_to": 2**63}, "cadence_to"), ({"date_from": "yesterday"}, "date_from"),
    ({"date_to": "2019-13-45"}, "date_to"), ({"good": "maybe"}, "good"),
    ({"page_token": "not-a-token"}, "page_token"), ({"page_token": "e30"}, "page_token")])
def test_invalid_frame_parameters_are_422(seeded_api, params, where):
    r = seeded_api.http.get("/raw", params=params)
    assert r.status_code == 422, r.text
    assert where in r.json()["detail"]


def test_staging_frames_and_cubes(seeded_api):
    http = seeded_api.http
    items = http.get("/staging", params={"cube": CUBE, "limit": 1000}).json()["items"]
    assert [i["cube_index"] for i in items] == list(range(INGESTED))
    assert all(i["cube_key"] == f"staging/{CUBE}.zarr" for i in items)
    cubes = http.get("/staging/cubes").json()["items"]
    (cube,) = [c for c in cubes if c["cube"] == CUBE]
    assert cube["n_cadences"] == INGESTED and cube["shape"] == [128, 128]
    assert (cube["sector"], cube["camera"], cube["ccd"]) == (14, 1, 1)
    assert {"flux", "background", "pixel_flags", "sumimage"} <= set(cube["arrays"])


def test_cube_images(seeded_api):
    http = seeded_api.http

    def image(**params):
        r = http.get(f"/staging/cubes/{CUBE}/image", params=params)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/octet-stream"
        return np.load(io.BytesIO(r.content), allow_pickle=False)

    flux, background = image(kind="flux", index=3), image(kind="background", index=3)
    corrected = image(kind="corrected", index=3)
    assert flux.shape == background.shape == corrected.shape == (128, 128)
    finite = np.isfinite(corrected)
    assert finite.mean() > 0.9
    np.testing.assert_allclose(corrected[finite], (flux - background)[finite], rtol=1e-6)
    assert image(kind="sumimage", index=999).shape == (128, 128)
    assert image(kind="pixel_flags", index=0).dtype == np.uint8
    assert http.get(f"/staging/cubes/{CUBE}/image", params={"index": INGESTED}).status_code == 404
    assert http.get(f"/staging/cubes/{CUBE}/image", params={"kind": "nope"}).status_code == 422
    assert http.get("/staging/cubes/s0001-1-1/image").status_code == 404
    assert http.get("/staging/cubes/..%2Fraw/image").status_code in (404, 422)


# -- download -----------------------------------------------------------------------------------
def test_download_streams_a_raw_fits_file_with_ranges(seeded_api):
    http = seeded_api.http
    path = seeded_api.sim_paths[0]
    original = path.read_bytes()
    key = f"raw/s0014/1-1/{path.name}"
    r = http.get("/download", params={"key": key})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/fits"
    assert r.headers["accept-ranges"] == "bytes"
    assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(original).hexdigest()
    part = http.get("/download", params={"key": key}, headers={"Range": "bytes=2880-5759"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 2880-5759/{len(original)}"
    assert part.content == original[2880:5760]
    tail = http.get("/download", params={"key": key}, headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == original[-100:]
    past = http.get("/download", params={"key": key}, headers={"Range": f"bytes={len(original)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(original)}"
    ignored = http.get("/download", params={"key": key}, headers={"Range": "bytes=0-1,5-6"})
    assert ignored.status_code == 200 and len(ignored.content) == len(original)


def test_download_zarr_metadata_and_chunks(seeded_api):
    http = seeded_api.http
    meta = http.get("/download", params={"key": f"staging/{CUBE}.zarr/zarr.json"})
    assert meta.status_code == 200 and meta.headers["content-type"] == "application/json"
    assert meta.json()["node_type"] == "group"
    chunk_key = next(k for k in seeded_api.store.fs.find(seeded_api.store.path(f"staging/{CUBE}.zarr/flux"))
                     if "/c/" in k)
    key = chunk_key[len(seeded_api.store.root) + 1:]
    chunk = http.get("/download", params={"key": key})
    assert chunk.status_code == 200 and chunk.headers["content-type"] == "application/octet-stream"
    assert len(chunk.content) > 0
    folder = http.get("/download", params={"key": f"staging/{CUBE}.zarr"})
    assert folder.status_code == 404
    assert http.get("/download", params={"key": "raw/s0014/1-1/missing.fits"}).status_code == 404


@pytest.mark.parametrize("query", [
    "key=../secret", "key=raw/../../etc/passwd", "key=%2e%2e/raw/x", "key=raw/%2e%2e/%2e%2e/etc/passwd",
    "key=raw/%252e%252e/x", "key=/etc/passwd", "key=s3://other-bucket/raw/x", "key=file:///etc/passwd",
    "key=other/x", "key=raw//x", "key=raw\\..\\x", "key=./raw/x", "key=", "key=~root/x",
    "key=http://169.254.169.254/latest"])
def test_download_refuses_keys_outside_the_zones(seeded_api, query):
    r = seeded_api.http.get(f"/download?{query}")
    assert r.status_code in (400, 422), r.text
    assert isinstance(r.json()["detail"], str) and r.json()["detail"]


def test_download_does_not_follow_symlinks_out_of_a_local_store(seeded_api, tmp_path):
    """On a local store a key is a path: a symlink planted in the store (a file, or a
    whole folder) that points outside it must not make /download serve the outside file.
    The seeded API's store is S3, so this runs on a local store of its own."""
    import httpx

    from pipeline.store import Store

    outside = tmp_path / "outside"
    outside.mkdir()
    secret = b"SIMPLE  = T / not the store's: " + b"secret-" + os.urandom(16).hex().encode()
    (outside / "secret.fits").write_bytes(secret)
    store = Store(str(tmp_path / "store"))
    inside = store.path("raw/s0014/1-1/real.fits")
    os.makedirs(os.path.dirname(inside))
    Path(inside).write_bytes(b"inside the store")
    os.symlink(outside / "secret.fits", store.path("raw/s0014/1-1/evil.fits"))
    os.symlink(outside, store.path("raw/s0014/2-2"))
    app = create_app(seeded_api.settings, seeded_api.client, store=store, catalog=seeded_api.catalog)
    with ServerThread(app) as url:
        ok = httpx.get(f"{url}/download", params={"key": "raw/s0014/1-1/real.fits"}, timeout=20)
        refused = [httpx.get(f"{url}/download", params={"key": key}, timeout=20)
                   for key in ("raw/s0014/1-1/evil.fits", "raw/s0014/2-2/secret.fits")]
    assert ok.status_code == 200 and ok.content == b"inside the store"   # the server works
    for r in refused:
        assert r.status_code == 400, r.text
        assert r.json()["detail"] == "key leaves the store"
        assert b"secret-" not in r.content


# -- curated ------------------------------------------------------------------------------------
def test_apertures_by_ccd_and_id(seeded_api):
    http = seeded_api.http
    items, _ = all_items(http, "/curated/apertures", sector=14, camera=1, ccd=1, limit=25)
    assert len(items) == seeded_api.catalog.apertures.count_documents({}) > 5
    first = items[0]
    assert set(first) == {"id", "sector", "camera", "ccd", "cube", "label", "row", "col", "ra", "dec",
                          "n_pixels", "flux", "star"}
    detail = http.get(f"/curated/apertures/{first['id']}").json()
    assert len(detail["pixels"]) == first["n_pixels"]
    assert http.get("/curated/apertures/14-1-1-999999999").status_code == 404
    assert http.get("/curated/apertures/not-an-id").status_code == 422
    bright = [i for i in items if i["flux"] >= 10_000]
    got = all_items(http, "/curated/apertures", flux_min=10_000)[0]
    assert sorted(i["id"] for i in got) == sorted(i["id"] for i in bright)


def test_cone_search_matches_brute_force(seeded_api):
    http = seeded_api.http
    items = all_items(http, "/curated/lightcurves", limit=1000)[0]
    centre = items[len(items) // 2]
    radius = 0.05
    got = all_items(http, "/curated/lightcurves", ra=centre["ra"], dec=centre["dec"], radius=radius, limit=3)[0]
    expected = [i["id"] for i in items
                if angular_distance(centre["ra"], centre["dec"], i["ra"], i["dec"]) <= radius]
    assert centre["id"] in expected
    assert sorted(i["id"] for i in got) == sorted(expected)
    partial = http.get("/curated/lightcurves", params={"ra": 10, "dec": 10})
    assert partial.status_code == 422 and "radius" in partial.json()["detail"]


def test_cone_search_across_ra_zero_and_the_pole(seeded_api):
    docs = [{"sector": 98, "camera": 1, "ccd": 1, "label": i, "ra": ra, "dec": dec}
            for i, (ra, dec) in enumerate([(359.95, 0.0), (0.05, 0.0), (0.5, 0.0), (180.0, 89.95),
                                           (0.0, 89.96), (90.0, 89.0)])]
    seeded_api.catalog.lightcurves.insert_many(docs)
    try:
        def labels(ra, dec, radius):
            items = all_items(seeded_api.http, "/curated/lightcurves", sector=98, ra=ra, dec=dec, radius=radius)[0]
            return sorted(i["label"] for i in items)

        assert labels(0.0, 0.0, 0.1) == [0, 1]
        assert labels(359.99, 0.0, 0.1) == [0, 1]
        assert labels(0.0, 90.0, 0.1) == [3, 4]
    finally:
        seeded_api.catalog.lightcurves.delete_many({"sector": 98})


def test_lightcurve_as_json_csv_and_fits(seeded_api):
    http = seeded_api.http
    summary = http.get("/curated/lightcurves", params={"sector": 14, "limit": 1}).json()["items"][0]
    assert set(summary) == {"id", "sector", "camera", "ccd", "label", "ra", "dec", "tmag", "median_flux",
                            "rms_1h_ppm", "ptp_ppm", "n_cadences"}
    lc = http.get(f"/curated/lightcurves/{summary['id']}").json()
    n = summary["n_cadences"]
    for name in ("time", "flux", "flux_err", "flux_bkg", "quality", "centroid_row", "centroid_col"):
        assert len(lc[name]) == n, name
    assert all(v is None or math.isfinite(v) for v in lc["flux"])
    csv = http.get(f"/curated/lightcurves/{summary['id']}", params={"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.strip().splitlines()
    assert lines[0].split(",")[:3] == ["time", "cadenceno", "flux"] and len(lines) == n + 1
    assert float(lines[1].split(",")[0]) == pytest.approx(lc["time"][0], abs=1e-8)
    r = http.get(f"/curated/lightcurves/{summary['id']}", params={"format": "fits"})
    assert r.headers["content-type"] == "application/fits"
    with fits.open(io.BytesIO(r.content)) as hdul:
        assert hdul[0].header["TELESCOP"] == "TESS"
        table = hdul["LIGHTCURVE"].data
        assert len(table) == n
        np.testing.assert_allclose(table["TIME"], lc["time"])
    assert http.get(f"/curated/lightcurves/{summary['id']}", params={"format": "xml"}).status_code == 422


def test_lightcurve_spectrum(seeded_api):
    http = seeded_api.http
    doc = seeded_api.catalog.lightcurves.find_one({"spectrum": {"$ne": None}, "sector": 14},
                                                  {"sector": 1, "camera": 1, "ccd": 1, "label": 1})
    assert doc is not None, "the seed run made no spectrum"
    spec = http.get(f"/curated/lightcurves/14-1-1-{doc['label']}/spectrum").json()
    assert len(spec["frequency_uhz"]) == len(spec["amplitude_ppm"]) > 3
    assert all(set(p) >= {"frequency_uhz", "amplitude_ppm"} for p in spec["peaks"])
    assert http.get("/curated/lightcurves/14-1-1-999999999/spectrum").status_code == 404
