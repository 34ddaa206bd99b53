"""``GET /download?key=<zone>/...``: stream one object of the raw, staging or curated
zone, with its media type (FITS ``application/fits``, zarr chunks
``application/octet-stream``, zarr metadata ``application/json``) and HTTP range
requests (one range per request: 206 with Content-Range; 416 when unsatisfiable; a
malformed Range header is ignored, as RFC 9110 asks)."""

from __future__ import annotations

import os
import posixpath
import re
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query
from starlette.responses import Response, StreamingResponse

from pipeline.api.deps import State
from pipeline.api.keys import MAX_KEY_LENGTH, check_key, content_type
from pipeline.api.models import errors

router = APIRouter(tags=["download"])

BLOCK = 1 << 20
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """(first, last) byte of a single satisfiable range, None for the whole object
    (no header, or one we ignore), "unsatisfiable" for a range past the end."""
    if not header:
        return None
    m = _RANGE.match(header.strip().replace(" ", ""))
    if not m or (not m.group(1) and not m.group(2)):
        return None                   # multi-range or malformed: serve the whole object
    first, last = m.group(1), m.group(2)
    if not first:                     # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    if start >= size:
        return "unsatisfiable"
    end = int(last) if last else size - 1
    if end < start:
        return None                   # invalid: ignored
    return start, min(end, size - 1)


def _safe_name(key: str) -> str:
    # header values are latin-1; a quote would end the filename early
    return re.sub(r"[^A-Za-z0-9._+-]", "_", posixpath.basename(key)) or "download"


def _object_info(store, key: str) -> dict:
    path = store.path(key)
    try:
        if store.is_local:
            # a symlink must not lead out of the store's folder
            real, root = os.path.realpath(path), os.path.realpath(store.root)
            if not real.startswith(root + os.sep):
                raise HTTPException(400, "key leaves the store")
            info = store.fs.info(path)
        else:
            info = store.fs.info(path, refresh=True)
    except FileNotFoundError:
        raise HTTPException(404, f"no object {key!r} in the store") from None
    if info.get("type") == "directory":
        raise HTTPException(404, f"{key!r} is a folder, not an object (a zarr cube is a folder: "
                                 f"download its zarr.json or chunks)")
    return info


def _stream(store, key: str, start: int, length: int):
    with store.open(key, "rb") as f:
        if start:
            f.seek(start)
        left = length
        while left > 0:
            block = f.read(min(BLOCK, left))
            if not block:
                break
            left -= len(block)
            yield block


@router.get("/download", response_class=StreamingResponse, responses={
    200: {"content": {"application/fits": {}, "application/octet-stream": {}, "application/json": {}},
          "description": "the object's bytes"},
    206: {"description": "the requested byte range"},
    416: {"description": "range not satisfiable"}, **errors(400, 404, 422, 503)},
    summary="Stream one object of the raw, staging or curated zone (Range supported)")
def download(state: State,
             key: Annotated[str, Query(min_length=1, max_length=MAX_KEY_LENGTH,
                                       description="object key, e.g. raw/s0014/1-1/tess...ffic.fits")],
             range_header: Annotated[str | None, Header(alias="Range", max_length=200)] = None):
    key = check_key(key)
    store = state.store
    info = _object_info(store, key)
    size = int(info.get("size") or 0)
    headers = {"Accept-Ranges": "bytes",
               "Content-Disposition": f'attachment; filename="{_safe_name(key)}"'}
    span = parse_range(range_header, size)
    if span == "unsatisfiable":
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    media = content_type(key)
    if span is None:
        return StreamingResponse(_stream(store, key, 0, size), media_type=media,
                                 headers={**headers, "Content-Length": str(size)})
    first, last = span
    length = last - first + 1
    return StreamingResponse(_stream(store, key, first, length), status_code=206, media_type=media,
                             headers={**headers, "Content-Length": str(length),
                                      "Content-Range": f"bytes {first}-{last}/{size}"})
