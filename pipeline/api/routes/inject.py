"""``POST /inject``: upload FITS files into the raw zone.

Each file is streamed to a temporary file (``uploads``), read with the pipeline's
own readers (``pipeline.io.read``: the same checks ingest makes, pixels included),
then copied to ``raw/s<sector>/<camera>-<ccd>/<name>``. Idempotent by name and
checksum: the same file again is a ``duplicate``; a different file under a name
already in the raw zone or already ingested is ``rejected`` (conflict). Rejected
files never reach the store. Ingesting them is a job (``POST /jobs`` with the keys).
"""

from __future__ import annotations

import os
import shutil
import tempfile

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from pipeline.api.deps import ApiKey, State
from pipeline.api.errors import error
from pipeline.api.keys import BadKey, check_file_name
from pipeline.api.models import InjectResult, errors
from pipeline.api.responses import JSON
from pipeline.api.uploads import FIELD, Upload, UploadError, parse_uploads
from pipeline.io import TessFileError, read, read_info
from pipeline.store import RawConflict, Store

router = APIRouter(tags=["inject"])

FULL_READ_LIMIT = 256 << 20    # bytes: larger files are checked from their headers only


def _outcome(upload: Upload, status: str, reason: str | None = None, key: str | None = None) -> dict:
    return {"name": upload.name, "status": status, "reason": reason, "key": key, "size": upload.size,
            "sha256": upload.sha256 or None}


def place(state, upload: Upload) -> dict:
    """Validate one uploaded file and put it in the raw zone (runs in a worker thread)."""
    try:
        name = check_file_name(upload.name)     # a bare name: no folders, nothing to escape
    except BadKey as exc:
        return _outcome(upload, "rejected", f"invalid file name: {exc}")
    try:
        # the pixels too (an all-NaN image is caught here, not in a later job), unless the
        # file is so large that holding them would cost the API process gigabytes
        info = read(upload.path).info if upload.size <= FULL_READ_LIMIT else read_info(upload.path)
    except TessFileError as exc:
        detail = exc.detail.replace(os.path.dirname(upload.path) + os.sep, "")   # no server paths
        return _outcome(upload, "rejected", f"{exc.problem}: {detail}" if detail else exc.problem)
    key = Store.raw_key(name, info.sector, info.camera, info.ccd)
    known = state.catalog.ingested_files([name]).get(name)
    if known is not None:
        if known == upload.sha256:
            return _outcome(upload, "duplicate", "this file (same name and sha256) is already ingested", key)
        return _outcome(upload, "rejected", f"conflict: a different file named {name} was already ingested")
    store = state.store
    if not store.is_local:        # s3fs may hold a stale listing of the folder
        store.fs.invalidate_cache(store.path(key).rsplit("/", 1)[0])
    try:
        outcome = store.put_raw(upload.path, key, upload.sha256, name=name)
    except RawConflict:
        return _outcome(upload, "rejected", f"conflict: a different file named {name} is already in "
                                            f"the raw zone at {key}")
    if outcome == "duplicate":
        return _outcome(upload, "duplicate", "this file (same name and sha256) is already in the raw zone", key)
    return _outcome(upload, "accepted", None, key)


_BODY = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": [FIELD],
    "properties": {FIELD: {"type": "array", "items": {"type": "string", "format": "binary"},
                           "description": "FITS files (FFI, TESScut cut-out or TPF; plain or gzipped)"}}}}}}}


@router.post("/inject", dependencies=[ApiKey], response_model=InjectResult, openapi_extra=_BODY,
             responses=errors(400, 401, 413, 415, 422, 503),
             summary="Upload FITS files into the raw zone (validated; accepted/duplicate/rejected per file)")
async def inject(state: State, request: Request):
    results: list[dict] = []
    folder = tempfile.mkdtemp(prefix="tess-inject-")

    async def on_file(upload: Upload) -> None:
        try:
            results.append(await run_in_threadpool(place, state, upload))
        finally:
            _remove(upload.path)          # disk holds one upload at a time

    try:
        await parse_uploads(request, folder, state.max_upload_bytes, on_file)
    except UploadError as exc:
        return error(exc.status, str(exc), files=results)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    state.stats_cache = (0.0, None)
    return JSON({"files": results})


def _remove(path: str) -> None:
    shutil.rmtree(os.path.dirname(path), ignore_errors=True)
