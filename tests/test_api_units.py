"""The API's pure helpers, no server: page tokens and keyset paging (on nx-27017),
cone geometry, key checks, Range parsing, strict JSON."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from pipeline.api import sky
from pipeline.api.keys import BadKey, check_cube_id, check_file_name, check_key, content_type
from pipeline.api.pagination import PageTokenError, decode_token, encode_token, fingerprint, keyset_page
from pipeline.api.responses import dumps, json_with_arrays
from pipeline.api.routes.download import parse_range


def test_tokens_round_trip_and_belong_to_their_query():
    fp = fingerprint("raw", {"sector": 14})
    token = encode_token(fp, [1681.5, "a.fits", 3])
    assert decode_token(token, fp, 3) == [1681.5, "a.fits", 3]
    with pytest.raises(PageTokenError, match="different query"):
        decode_token(token, fingerprint("raw", {"sector": 15}), 3)
    for bad in ("", "!!!", "e30", encode_token(fp, [1, 2]), "x" * 5000):
        with pytest.raises(PageTokenError):
            decode_token(bad, fp, 3)


def test_keyset_pages_cover_everything_once_with_ties(catalog):
    rng = random.Random(1)
    docs = [{"t": rng.choice([1.0, 2.0, 2.5, 3.0]), "name": f"n{i:04d}", "k": i % 3, "q": i % 5}
            for i in range(700)]
    catalog.db["paging"].insert_many([dict(d) for d in docs])
    sort = [("t", 1), ("name", 1), ("k", 1)]
    for limit, match in ((50, None), (7, lambda d: d["q"] == 0), (1000, None)):
        seen, after, fp = [], None, "fp"
        while True:
            page, token = keyset_page(catalog.db["paging"], {"t": {"$gte": 1.0}}, sort, limit, after, fp,
                                      {"t": 1, "name": 1, "k": 1, "q": 1}, match)
            assert len(page) <= limit
            seen += [(d["t"], d["name"], d["k"]) for d in page]
            if token is None:
                break
            after = decode_token(token, fp, 3)
        expected = sorted((d["t"], d["name"], d["k"]) for d in docs if match is None or match(d))
        assert seen == expected


def test_keyset_descending(catalog):
    catalog.db["desc"].insert_many([{"c": i // 2, "_id": f"j{i:03d}"} for i in range(30)])
    seen, after = [], None
    while True:
        page, token = keyset_page(catalog.db["desc"], {}, [("c", -1), ("_id", -1)], 4, after, "fp")
        seen += [d["_id"] for d in page]
        if token is None:
            break
        after = decode_token(token, "fp", 2)
    assert seen == [f"j{i:03d}" for i in reversed(range(30))]


@pytest.mark.parametrize("ra, dec, radius", [(0.0, 0.0, 1.0), (359.5, 10.0, 2.0), (180.0, 89.5, 1.0),
                                             (10.0, -89.9, 0.5), (200.0, 45.0, 30.0), (0.2, -60.0, 5.0)])
def test_cone_box_contains_the_cone(ra, dec, radius):
    rng = np.random.default_rng(abs(int(ra * 10 + dec)))
    query = sky.box_query(ra, dec, radius)
    inside = sky.within(ra, dec, radius)

    def in_box(r, d):
        lo, hi = query["dec"]["$gte"], query["dec"]["$lte"]
        if not lo <= d <= hi:
            return False
        c = query.get("ra", {})
        return c.get("$gte", -1) <= r <= c.get("$lte", 361)

    for _ in range(3000):   # points near the cone: every one inside it must be in the box
        d = float(np.clip(dec + rng.normal(0, radius), -90, 90))
        r = float((ra + rng.normal(0, radius / max(0.05, math.cos(math.radians(d))))) % 360)
        if inside({"ra": r, "dec": d}):
            assert in_box(r, d), (r, d)


def test_angular_distance():
    assert sky.angular_distance(0, 0, 0, 1) == pytest.approx(1.0)
    assert sky.angular_distance(359.9, 0, 0.1, 0) == pytest.approx(0.2)
    assert sky.angular_distance(10, 90, 190, 89) == pytest.approx(1.0)


@pytest.mark.parametrize("key", ["raw/s0014/1-1/a.fits", "staging/s0014-1-1.zarr/flux/c/0/0/0",
                                 "curated/lightcurves/x_lc.fits", "raw/"])
def test_good_keys(key):
    assert check_key(key) == key.rstrip("/")


@pytest.mark.parametrize("key", ["", "../raw", "raw/../x", "raw/./x", "/raw/x", "s3://b/raw/x", "file:raw",
                                 "raw//x", "raw\\x", "raw/%2e%2e/x", "other/x", "raw/x\x00", "~/raw",
                                 "raw/" + "x" * 2000])
def test_bad_keys(key):
    with pytest.raises(BadKey):
        check_key(key)


def test_names_and_types():
    assert check_cube_id("s0014-1-1") == "s0014-1-1"
    for bad in ("../x", "a/b", "", "x" * 300):
        with pytest.raises(BadKey):
            check_cube_id(bad)
    assert check_file_name("tess2019199201929-s0014-2-3-0150-s_ffic.fits")
    for bad in ("a/b.fits", "..", ".hidden", "a b.fits"):
        with pytest.raises(BadKey):
            check_file_name(bad)
    assert content_type("raw/x_ffic.fits") == "application/fits"
    assert content_type("staging/c.zarr/zarr.json") == "application/json"
    assert content_type("staging/c.zarr/flux/c/0/0/0") == "application/octet-stream"


@pytest.mark.parametrize("header, expected", [
    (None, None), ("bytes=0-9", (0, 9)), ("bytes=5-", (5, 99)), ("bytes=-10", (90, 99)),
    ("bytes=90-500", (90, 99)), ("bytes=100-", "unsatisfiable"), ("bytes=-0", "unsatisfiable"),
    ("bytes=9-3", None), ("bytes=0-1,4-5", None), ("items=0-9", None), ("bytes=-", None)])
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


def test_strict_json():
    body = json.loads(dumps({"a": float("nan"), "b": [1.0, float("inf")], "c": np.float32(2.5)}))
    assert body == {"a": None, "b": [1.0, None], "c": 2.5}
    arrays = {"t": np.array([1681.5104166666665, np.nan]), "q": np.array([0, 32], np.int32),
              "e": np.array([12.781105, -np.inf], np.float32)}
    out = json.loads(json_with_arrays({"id": "x"}, arrays))
    assert out["t"][0] == pytest.approx(1681.5104166666665, abs=1e-8) and out["t"][1] is None
    assert out["q"] == [0, 32]
    assert np.float32(out["e"][0]) == np.float32(12.781105) and out["e"][1] is None


# -- the upload limit ---------------------------------------------------------------------------
README_DEFAULT_UPLOAD_BYTES = 2048 * (1 << 20)   # README: TESS_API_MAX_UPLOAD_MB "default 2048"


def test_upload_limit_defaults_to_the_documented_2_gib_per_file():
    """Without TESS_API_MAX_UPLOAD_MB (or an explicit limit) the API takes files up to the
    documented 2 GiB and no more: the literal, so a default raised to "unlimited" fails
    here rather than letting one upload fill the server's disk."""
    from pipeline.api.state import ApiState, env_max_upload_bytes
    from pipeline.config import Settings

    state = ApiState(Settings(store="memory://upload-limit"))
    try:
        assert state.max_upload_bytes == README_DEFAULT_UPLOAD_BYTES == 2 << 30
    finally:
        state.close()
    assert env_max_upload_bytes({}) == README_DEFAULT_UPLOAD_BYTES
    assert env_max_upload_bytes({"TESS_API_MAX_UPLOAD_MB": ""}) == README_DEFAULT_UPLOAD_BYTES


def test_upload_limit_from_the_environment_is_megabytes_and_must_be_positive():
    """TESS_API_MAX_UPLOAD_MB counts MiB; a zero, negative or non-numeric value is an
    error at start-up, not a limit of 0 bytes (every upload 413) or a silent default."""
    from pipeline.api.state import env_max_upload_bytes

    assert env_max_upload_bytes({"TESS_API_MAX_UPLOAD_MB": "1"}) == 1 << 20
    assert env_max_upload_bytes({"TESS_API_MAX_UPLOAD_MB": "0.5"}) == 1 << 19
    for bad in ("0", "-1", "-0.5", "inf", "1e400", "nan"):
        with pytest.raises(ValueError, match="TESS_API_MAX_UPLOAD_MB=.*must be a positive, finite"):
            env_max_upload_bytes({"TESS_API_MAX_UPLOAD_MB": bad})
    for bad in ("x", "2GB"):
        with pytest.raises(ValueError, match="not a number"):
            env_max_upload_bytes({"TESS_API_MAX_UPLOAD_MB": bad})
