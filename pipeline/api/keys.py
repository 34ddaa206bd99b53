"""Object keys clients may name: only inside the project's zones, never a way out.

A key is a relative path ``<zone>/<...>`` with zone raw, staging or curated. Refused
(400, with the reason): URL schemes (``s3://``, ``file:``), absolute paths, ``..`` or
``.`` segments (also when they arrive percent-encoded: the framework decodes the
query once, and any ``%`` left over is refused too), backslashes, empty segments,
control characters. The store joins the key under its own root, so a key can never
name another bucket or folder.
"""

from __future__ import annotations

import posixpath
import re

from pipeline.store import ZONES

MAX_KEY_LENGTH = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CUBE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")


class BadKey(ValueError):
    """A key that names something outside the project's zones, or is malformed."""


def check_key(key: str, zones: tuple[str, ...] = ZONES) -> str:
    """``key`` if it is a safe object key in one of ``zones``; else BadKey saying why."""
    if not key:
        raise BadKey("key is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise BadKey(f"key is longer than {MAX_KEY_LENGTH} characters")
    if _CONTROL.search(key):
        raise BadKey("key contains control characters")
    if ":" in key:
        raise BadKey("key must be a path inside the store, not a URL (no scheme, no ':')")
    if "\\" in key:
        raise BadKey("key must use '/' separators, not '\\'")
    if "%" in key:
        raise BadKey("key must not contain '%' (send it percent-encoded once, as a plain path)")
    if key.startswith(("/", "~")):
        raise BadKey("key must be relative to the store (no leading '/' or '~')")
    parts = key.split("/")
    if any(p in ("..", ".") for p in parts):
        raise BadKey("key must not contain '.' or '..' segments")
    if any(p == "" for p in parts[:-1]):
        raise BadKey("key must not contain empty segments ('//')")
    if parts[0] not in zones:
        raise BadKey(f"key must start with one of the zones {', '.join(z + '/' for z in zones)} "
                        f"(got {parts[0]!r})")
    if posixpath.normpath(key).split("/")[0] not in zones:   # belt and braces
        raise BadKey("key leaves the store's zones")
    return key.rstrip("/")


def check_cube_id(cube: str) -> str:
    if not _CUBE_ID.match(cube) or ".." in cube:
        raise BadKey(f"{cube[:80]!r} is not a cube id (letters, digits, '._+-', e.g. s0014-1-1)")
    return cube


def check_file_name(name: str) -> str:
    """An uploaded file's name as it will be stored (the raw zone keeps original names)."""
    if not _FILE_NAME.match(name) or ".." in name:
        raise BadKey(f"{name[:80]!r} is not an acceptable file name (letters, digits and "
                        "'._+-' only, at most 255 characters, e.g. tess2019199201929-s0014-2-3-0150-s_ffic.fits)")
    return name


def content_type(key: str) -> str:
    """The media type of an object, from its key: FITS, zarr metadata, chunks, exports."""
    name = posixpath.basename(key).lower()
    if name.endswith((".fits", ".fit", ".fts")):
        return "application/fits"
    if name.endswith(".gz"):
        return "application/gzip"
    if name.endswith(".json"):
        return "application/json"
    if name.endswith(".csv"):
        return "text/csv; charset=utf-8"
    if name.endswith(".png"):
        return "image/png"
    if name.endswith((".txt", ".md")):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"   # zarr chunks and anything else binary
