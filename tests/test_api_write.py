"""The API's write side through real HTTP: the API key, uploads (POST /inject) and
jobs (POST/GET/DELETE /jobs), on the shared seeded API (test_api_support)."""

from __future__ import annotations

import hashlib
import time

import httpx
import pytest

from test_api_support import API_KEY, CUBE, INGESTED, seeded_api  # noqa: F401 - the shared fixture
from pipeline.api import ServerThread, create_app

FINISHED = ("done", "failed", "cancelled")


def upload(seeded_api, *files, headers=None):
    parts = [("files", (name, data, "application/fits")) for name, data in files]
    return seeded_api.http.post("/inject", files=parts,
                                headers=seeded_api.write_headers if headers is None else headers)


def wait_for(http, job_id, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = http.get(f"/jobs/{job_id}").json()
        if doc["status"] in FINISHED:
            return doc
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {doc['status']} after {timeout} s")


# -- the API key --------------------------------------------------------------------------------
@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": API_KEY + "x"},
                                     {"X-API-Key": ""}, {"Authorization": f"Bearer {API_KEY}"}])
def test_write_endpoints_need_the_key(seeded_api, headers):
    http = seeded_api.http
    responses = [
        http.post("/inject", files=[("files", ("a.fits", b"x"))], headers=headers),
        http.post("/jobs", json={"cubes": [CUBE]}, headers=headers),
        http.delete("/jobs/some-job", headers=headers),
    ]
    for r in responses:
        assert r.status_code == 401, r.text
        assert r.headers["content-type"] == "application/json"
        detail = r.json()["detail"]
        assert "API key" in detail and API_KEY not in detail
    assert seeded_api.catalog.jobs.count_documents({}) == 0


def test_without_a_configured_key_writes_are_disabled(seeded_api):
    settings = seeded_api.settings.replace()
    object.__setattr__(settings, "api_key", None)
    app = create_app(settings, seeded_api.client, store=seeded_api.store, catalog=seeded_api.catalog)
    with ServerThread(app) as url:
        r = httpx.post(f"{url}/jobs", json={"cubes": [CUBE]}, headers={"X-API-Key": "anything"})
    assert r.status_code == 401 and "TESS_API_KEY" in r.json()["detail"]


# -- uploads ------------------------------------------------------------------------------------
def test_inject_accepts_valid_rejects_corrupt_and_is_idempotent(seeded_api):
    spare = seeded_api.spare_paths[0]
    good = spare.read_bytes()
    truncated = good[: len(good) // 2]
    ingested = seeded_api.sim_paths[0]
    r = upload(seeded_api, (spare.name, good), ("tess-corrupt-s0014-1-1_ffic.fits", truncated),
               ("notes.fits", b"this is not a FITS file at all\n" * 100), (ingested.name, ingested.read_bytes()))
    assert r.status_code == 200, r.text
    files = {f["name"]: f for f in r.json()["files"]}
    accepted = files[spare.name]
    assert accepted["status"] == "accepted" and accepted["reason"] is None
    assert accepted["key"] == f"raw/s0014/1-1/{spare.name}" and accepted["size"] == len(good)
    assert accepted["sha256"] == hashlib.sha256(good).hexdigest()
    corrupt = files["tess-corrupt-s0014-1-1_ffic.fits"]
    assert corrupt["status"] == "rejected" and corrupt["key"] is None
    assert "truncated" in corrupt["reason"]
    assert files["notes.fits"]["status"] == "rejected" and files["notes.fits"]["reason"]
    assert files[ingested.name]["status"] == "duplicate"
    # the object is in the raw zone, byte for byte; the rejected ones are not
    assert seeded_api.http.get("/download", params={"key": accepted["key"]}).content == good
    assert not seeded_api.store.exists("raw/s0014/1-1/tess-corrupt-s0014-1-1_ffic.fits")
    again = upload(seeded_api, (spare.name, good)).json()["files"][0]
    assert again["status"] == "duplicate" and again["key"] == accepted["key"]


def test_inject_refuses_a_different_file_under_a_known_name(seeded_api):
    ingested = seeded_api.sim_paths[1]
    other = seeded_api.sim_paths[2].read_bytes()
    result = upload(seeded_api, (ingested.name, other)).json()["files"][0]
    assert result["status"] == "rejected" and "conflict" in result["reason"]


def test_inject_rejects_unsafe_names(seeded_api):
    data = seeded_api.spare_paths[1].read_bytes()
    for name in ("../../etc/passwd", "..", "a b.fits", "x;rm -rf.fits"):
        result = upload(seeded_api, (name, data)).json()["files"][0]
        assert result["status"] == "rejected", name
    assert not seeded_api.store.exists(f"raw/s0014/1-1/{seeded_api.spare_paths[1].name}")


def test_inject_size_limit_is_413(seeded_api):
    state = seeded_api.app.state.api
    previous, state.max_upload_bytes = state.max_upload_bytes, 100_000
    try:
        r = upload(seeded_api, ("big.fits", b"\0" * 300_000))
    finally:
        state.max_upload_bytes = previous
    assert r.status_code == 413 and "limit" in r.json()["detail"]


@pytest.mark.parametrize("kwargs, status", [
    ({"json": {"files": []}}, 415), ({"data": {"files": "not a file"}}, 415),
    ({"content": b'--xyz\r\nContent-Disposition: form-data; name="files"\r\n\r\nnot a file\r\n--xyz--\r\n',
      "headers": {"Content-Type": "multipart/form-data; boundary=xyz"}}, 422),
    ({"files": [("other", ("a.fits", b"x"))]}, 422),
    ({"content": b"garbage", "headers": {"Content-Type": "multipart/form-data; boundary=xyz"}}, 422),
    ({"content": b"--xyz\r\n", "headers": {"Content-Type": "multipart/form-data"}}, 422)])
def test_inject_bad_bodies(seeded_api, kwargs, status):
    headers = {**seeded_api.write_headers, **kwargs.pop("headers", {})}
    r = seeded_api.http.post("/inject", headers=headers, **kwargs)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["detail"], str)


# -- jobs (last: a job changes the cube) --------------------------------------------------------
@pytest.mark.parametrize("body, status", [
    ({}, 422), ({"inputs": []}, 422), ({"inputs": ["/etc/passwd"]}, 422),
    ({"inputs": ["staging/s0014-1-1.zarr/zarr.json"]}, 422), ({"inputs": ["raw/../x.fits"]}, 422),
    ({"inputs": ["s3://elsewhere/raw/x.fits"]}, 422), ({"inputs": ["raw/s0014/1-1/missing.fits"]}, 404),
    ({"cubes": ["no-such-cube"]}, 404), ({"cubes": ["../x"]}, 422), ({"inputs": "raw/x"}, 422),
    ({"inputs": [], "unknown": 1}, 422)])
def test_job_submission_checks_its_inputs(seeded_api, body, status):
    r = seeded_api.http.post("/jobs", json=body, headers=seeded_api.write_headers)
    assert r.status_code == status, r.text


def test_jobs_run_list_and_finish(seeded_api):
    http = seeded_api.http
    spare = seeded_api.spare_paths[0]
    key = upload(seeded_api, (spare.name, spare.read_bytes())).json()["files"][0]["key"]
    r = http.post("/jobs", json={"inputs": [key]}, headers=seeded_api.write_headers)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    assert r.json()["status"] in ("queued", "running")
    doc = wait_for(http, job_id)
    assert doc["status"] == "done", doc.get("error")
    assert doc["counts"]["files_accepted"] == 1 and doc["counts"]["lightcurves"] > 0
    assert set(doc["progress"]) >= {"background", "apertures", "lightcurves"}
    frames = http.get("/raw", params={"cube": CUBE, "limit": 1000}).json()["items"]
    assert len(frames) == INGESTED + 1
    listed = [j["id"] for j in http.get("/jobs").json()["items"]]
    assert job_id in listed
    assert job_id in [j["id"] for j in http.get("/jobs", params={"status": "done"}).json()["items"]]
    assert job_id not in [j["id"] for j in http.get("/jobs", params={"status": "failed"}).json()["items"]]
    assert http.get("/jobs", params={"status": "bogus"}).status_code == 422
    late = http.delete(f"/jobs/{job_id}", headers=seeded_api.write_headers)
    assert late.status_code == 409


def test_job_cancel(seeded_api):
    http = seeded_api.http
    r = http.post("/jobs", json={"cubes": [CUBE]}, headers=seeded_api.write_headers)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    cancel = http.delete(f"/jobs/{job_id}", headers=seeded_api.write_headers)
    assert cancel.status_code == 200, cancel.text
    assert cancel.json()["id"] == job_id and cancel.json()["cancel_requested"] is True
    doc = wait_for(http, job_id)
    assert doc["status"] in ("cancelled", "done")    # it may finish before the cancel lands
    assert doc["cancel_requested"] is True
    assert http.get("/jobs/no-such-job").status_code == 404
    assert http.delete("/jobs/no-such-job", headers=seeded_api.write_headers).status_code == 404


def test_jobs_pages_newest_first(seeded_api):
    import datetime as dt

    base = dt.datetime(2030, 1, 1, tzinfo=dt.timezone.utc)
    docs = [{"_id": f"paging-{i}", "status": "failed", "created": base + dt.timedelta(minutes=i // 2),
             "inputs": [], "cubes": [], "error": "synthetic"} for i in range(7)]
    seeded_api.catalog.jobs.insert_many(docs)
    try:
        ids, token = [], None
        while True:
            params = {"status": "failed", "limit": 2, **({"page_token": token} if token else {})}
            body = seeded_api.http.get("/jobs", params=params).json()
            ids += [j["id"] for j in body["items"]]
            token = body["next_page_token"]
            if token is None:
                break
        assert ids == [f"paging-{i}" for i in (6, 5, 4, 3, 2, 1, 0)]
    finally:
        seeded_api.catalog.jobs.delete_many({"_id": {"$in": [d["_id"] for d in docs]}})


def test_a_lost_job_reads_as_lost_and_resumes(seeded_api):
    """A job whose process died (no heartbeat for minutes) is ``lost``, not running
    forever; POST /jobs/{id}/resume runs it again as a new job."""
    import datetime as dt

    http, headers = seeded_api.http, seeded_api.write_headers
    stale = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=10)
    seeded_api.catalog.jobs.insert_one({
        "_id": "lost-job", "status": "running", "created": stale, "heartbeat": stale,
        "inputs": [], "cubes": [CUBE], "parameters": {"tile": 512, "stars": None},
        "progress": {}, "error": None})
    assert http.get("/jobs/lost-job").json()["status"] == "lost"
    assert "lost-job" in [j["id"] for j in http.get("/jobs", params={"status": "lost"}).json()["items"]]
    assert "lost-job" not in [j["id"] for j in
                              http.get("/jobs", params={"status": "running"}).json()["items"]]
    assert http.post("/jobs/lost-job/resume").status_code == 401
    assert http.post("/jobs/no-such-job/resume", headers=headers).status_code == 404
    r = http.post("/jobs/lost-job/resume", headers=headers)
    assert r.status_code == 202, r.text
    new_id = r.json()["id"]
    doc = wait_for(http, new_id)
    assert doc["status"] == "done", doc.get("error")
    assert doc["resumed_from"] == "lost-job" and doc["cubes"] == [CUBE]
    old = http.get("/jobs/lost-job").json()
    assert old["status"] == "failed" and old["resumed_by"] == new_id and "lost" in old["error"]
    again = http.post("/jobs/lost-job/resume", headers=headers)
    assert again.status_code == 409 and "already resumed" in again.json()["detail"]
    done = http.post(f"/jobs/{new_id}/resume", headers=headers)
    assert done.status_code == 409 and "is done" in done.json()["detail"]



# -- the API key is compared in constant time and never logged (appended after the job
#    tests; the requests below change nothing: a job on a missing file is refused with 404
#    before it is created, and the upload is not a FITS file so nothing is stored) ----------
def _wrong_keys() -> list[str]:
    import uuid

    near_miss = API_KEY[:-1] + ("0" if API_KEY[-1] != "0" else "1")  # differs in the last byte
    return ["wrong-" + uuid.uuid4().hex, near_miss, ""]


def _key_requests(http, key):
    """Three write requests sent with ``key``: 401 each with a wrong key; with the right
    one, a job on a missing raw file (404), a cancel of an unknown job (404) and an upload
    of a non-FITS file (200, the file rejected)."""
    headers = {"X-API-Key": key}
    return [http.post("/jobs", json={"inputs": ["raw/s0014/1-1/missing.fits"]}, headers=headers),
            http.delete("/jobs/no-such-job", headers=headers),
            http.post("/inject", files=[("files", ("notes.fits", b"not a FITS file\n" * 10))],
                      headers=headers)]


def _capture_server_logs(caplog):
    """Every log record of this process, at DEBUG, into caplog: the seeded API's uvicorn
    runs in a thread of this process, but uvicorn's own loggers do not propagate to the
    root logger, so caplog's handler goes on them too. Returns the undo."""
    import logging

    caplog.set_level(logging.DEBUG)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "pipeline", "fastapi", "starlette"):
        caplog.set_level(logging.DEBUG, logger=name)
    loners = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.access")]
    for logger in loners:
        logger.addHandler(caplog.handler)
    return lambda: [logger.removeHandler(caplog.handler) for logger in loners]


def test_api_keys_are_never_logged(seeded_api, caplog):
    """Neither the server's key nor a wrong key a client sent shows up in any log, at any
    level (logs are shipped and read far more widely than the key is shared)."""
    http, wrong = seeded_api.http, _wrong_keys()
    undo = _capture_server_logs(caplog)
    try:
        for key in wrong:
            assert [r.status_code for r in _key_requests(http, key)] == [401] * 3
        good = _key_requests(http, API_KEY)
    finally:
        undo()
    assert [r.status_code for r in good] == [404, 404, 200], [r.text for r in good]
    # the capture works: the server's access log lines (method, path, status) are in it
    assert '"POST /jobs HTTP/1.1" 401' in caplog.text, caplog.text[-2000:]
    assert API_KEY not in caplog.text
    for key in wrong[:2]:           # (the empty key is in every text)
        assert key not in caplog.text


def test_api_keys_are_compared_in_constant_time(seeded_api, monkeypatch):
    """Every write request that carries a key has it checked with hmac.compare_digest
    (its time does not depend on where the first differing byte is), never with ``==`` /
    ``!=``, whose early exit lets a client find the key byte by byte from response times."""
    import pipeline.api.deps as deps

    real, calls = deps.hmac.compare_digest, []

    def spy(a, b):                  # records, then answers as the real one does
        calls.append({a, b})
        return real(a, b)

    monkeypatch.setattr(deps.hmac, "compare_digest", spy)
    for key in [*_wrong_keys(), API_KEY]:
        before = len(calls)
        responses = _key_requests(seeded_api.http, key)
        expected = [404, 404, 200] if key == API_KEY else [401] * 3
        assert [r.status_code for r in responses] == expected, [r.text for r in responses]
        compared = [c for c in calls[before:] if c == {key.encode(), API_KEY.encode()}]
        assert len(compared) >= len(responses), \
            f"{len(responses)} requests with key {key!r} but {len(compared)} compare_digest calls"
