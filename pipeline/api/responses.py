"""JSON responses: strict JSON (no NaN/Infinity: they become null), datetimes as ISO
8601, ObjectIds and other odd values as strings, numpy arrays as lists."""

from __future__ import annotations

import datetime as dt
import json
import math

import numpy as np
from starlette.responses import Response


def clean(value):
    """A copy of ``value`` that strict JSON can hold (non-finite floats → None)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return array_list(value)
    if isinstance(value, np.generic):
        return clean(value.item())
    return value


def array_list(a: np.ndarray) -> list:
    """A numpy array as a list, NaN/inf as None; fast when everything is finite."""
    a = np.asarray(a)
    values = a.tolist()
    if a.dtype.kind == "f" and a.size and not np.isfinite(a).all():
        bad = ~np.isfinite(a.ravel())
        flat = values if a.ndim == 1 else a.ravel().tolist()
        flat = [None if b else v for v, b in zip(flat, bad.tolist())]
        return flat if a.ndim == 1 else np.array(flat, dtype=object).reshape(a.shape).tolist()
    return values


def _default(value):
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, np.ndarray):
        return array_list(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (bytes, bytearray)):
        return None                   # binary fields are never part of a response
    return str(value)


def dumps(data) -> bytes:
    try:
        text = json.dumps(data, default=_default, allow_nan=False, separators=(",", ":"))
    except ValueError:                # a NaN somewhere: clean and retry (rare path)
        text = json.dumps(clean(data), default=_default, allow_nan=False, separators=(",", ":"))
    return text.encode()


def _array_json(a: np.ndarray) -> str:
    """One 1-D array as a JSON list, formatted in C (json.dumps of a light curve's
    9,000 floats was most of a request's CPU time). float32 as "%.9g" (exact);
    float64 as "%.12g": 1e-12 relative, e.g. BTJD to 1e-8 d (1 ms), far finer than
    any flux or time measured, and 40 % cheaper than the 17 digits of an exact
    round trip (CSV and FITS carry the full values). NaN and infinities become null."""
    a = np.asarray(a).ravel()
    if not a.size:
        return "[]"
    if a.dtype.kind in "iub":
        return "[" + ",".join(map(str, a.tolist())) + "]"
    fmt = "%.9g" if a.dtype.itemsize <= 4 else "%.12g"
    text = ",".join([fmt] * a.size) % tuple(a.tolist())
    if not np.isfinite(a).all():      # "%g" writes nan/inf/-inf; no number contains those
        text = text.replace("-inf", "null").replace("inf", "null").replace("nan", "null")
    return "[" + text + "]"


def json_with_arrays(fields: dict, arrays: dict[str, np.ndarray]) -> bytes:
    """A JSON object of ``fields`` plus numeric 1-D ``arrays`` (fast path for light curves)."""
    head = dumps(fields).decode()
    parts = [f"{json.dumps(name)}:{_array_json(values)}" for name, values in arrays.items()]
    if not parts:
        return head.encode()
    return (head[:-1] + ("," if len(head) > 2 else "") + ",".join(parts) + "}").encode()


class JSON(Response):
    """A JSONResponse that accepts datetimes, numpy values and NaN (as null)."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return dumps(content)
