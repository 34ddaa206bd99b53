"""Finished work, remembered: what a resumed job (or a re-run of the same inputs) reuses.

A job that failed half-way (a long store outage, a lost cluster) is resumed with
``pipeline.graph.resume(job_id)``; it must not redo what was finished. Each stage
leaves a *stamp* — everything its outputs were made from — next to its outputs, and
a later run reuses the outputs only when the stamp it would write is the same:

* ingest: per file, as always (a file already in its cube is a duplicate);
* background: the cube attribute ``background.stamp`` = a fingerprint of the cube's
  cadences (time, cadence number, quality), the manual-exclude list and the pipeline
  version. A cube that gets new frames in this run is never reused;
* apertures: the ``checkpoints`` document ``apertures:<cube>`` = the background's run
  id, the aperture parameters, tile size and star catalog, the version;
* light curves, per aperture-stage tile: ``lightcurves:<cube>:<tile>`` = the
  background's and the apertures' run ids, the light-curve options, the version —
  with the tile's report, so the stale-curve removal knows its labels.

Every stamp names the run id of the stage before it, so redoing a stage invalidates
everything after it. Stamps are written only after the outputs they describe are
complete (a stage killed half-way leaves the old stamp, which no longer matches what
the next run would write, or none). ``force=True`` on submit ignores them all.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np

import pipeline
from pipeline.catalog import match

APERTURES = "apertures"
LIGHTCURVES = "lightcurves"


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
            h.update(str(part.dtype).encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:32]


# -- background (a cube attribute: it lives with the arrays it describes) --------------------
def background_stamp(coords: dict, excludes) -> dict:
    """The stamp of a background made from cadences ``coords`` (the cube's time,
    cadenceno and quality arrays) with manual excludes ``excludes``."""
    return {"cadences": _digest(*(np.asarray(coords[k]) for k in ("time", "cadenceno", "quality"))),
            "frames": int(len(coords["time"])),
            "exclude": [e.to_dict() for e in excludes], "version": pipeline.__version__}


def finished_background(cube, excludes) -> dict | None:
    """The cube's ``background`` attribute when its background is complete and was made
    from exactly the cube's current cadences and ``excludes``; else None."""
    group = cube.group("r")
    attrs = group.attrs.get("background")
    if not attrs or "stamp" not in attrs or "run" not in attrs:
        return None
    if any(name not in group for name in ("background", "pixel_flags", "sumimage")):
        return None
    if attrs["stamp"] != background_stamp(cube.coords(), excludes):
        return None
    return dict(attrs)


# -- catalog checkpoints ---------------------------------------------------------------------
def stars_token(stars, catalog=None) -> str | None:
    """What identifies a star catalog input: a file by path, size and mtime, a table by
    its content, the ``stars`` collection by its size."""
    if stars is None:
        return None
    if isinstance(stars, str) and stars in ("catalog", "stars", "mongo"):
        count = catalog.stars.count_documents({}) if catalog is not None else None
        return f"stars collection ({count} stars)"
    if isinstance(stars, (str, os.PathLike)):
        path = Path(stars).resolve()
        stat = path.stat() if path.exists() else None
        return f"{path}:{stat.st_size}:{stat.st_mtime_ns}" if stat else str(path)
    columns = {name: np.asarray(stars[name]).astype(str) for name in ("id", "ra", "dec", "tmag")
               if name in getattr(stars, "colnames", stars)}
    return "table:" + _digest(*(columns[k] for k in sorted(columns)))


def aperture_stamp(background_run: str, tile: int, halo: int, params: dict, stars: str | None) -> dict:
    return {"background_run": background_run, "tile": int(tile), "halo": int(halo),
            "parameters": params, "stars": stars, "version": pipeline.__version__}


def lightcurve_stamp(background_run: str, aperture_run: str, options) -> dict:
    opts = dataclasses.asdict(options) if dataclasses.is_dataclass(options) else dict(options)
    return {"background_run": background_run, "aperture_run": aperture_run,
            "options": opts, "version": pipeline.__version__}


def aperture_key(cube_id: str) -> str:
    return f"{APERTURES}:{cube_id}"


def lightcurve_key(cube_id: str, tile_key: str) -> str:
    return f"{LIGHTCURVES}:{cube_id}:{tile_key}"


def load(catalog, key: str, stamp: dict) -> dict | None:
    """The saved result under ``key`` when it was made with ``stamp``; else None."""
    doc = catalog.checkpoints.find_one(match(_id=key), {"stamp": 1, "result": 1})
    if doc is None or _plain(doc.get("stamp")) != _plain(stamp):
        return None
    return doc.get("result")


def save(catalog, key: str, cube_id: str, stamp: dict, result: dict) -> None:
    catalog.checkpoints.replace_one(match(_id=key), {
        "_id": key, "stage": key.split(":", 1)[0], "cube": cube_id, "stamp": _plain(stamp),
        "result": _native(result)}, upsert=True)


def finished(catalog, stage: str, cube_id: str | None = None) -> int:
    """How many checkpoints of ``stage`` (``APERTURES`` or ``LIGHTCURVES``) there are."""
    query = match(stage=stage, **({"cube": cube_id} if cube_id else {}))
    return catalog.checkpoints.count_documents(query)


def forget(catalog, cube_id: str) -> int:
    """Drop every checkpoint of a cube (its stages will all run again)."""
    return catalog.checkpoints.delete_many(match(cube=cube_id)).deleted_count


def _plain(value):
    """The stamp as the catalog returns it (JSON types; tuples become lists)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _native(value):
    """numpy scalars and arrays as the Python values BSON stores."""
    if isinstance(value, dict):
        return {str(k): _native(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_native(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None                 # JSON-only servers (nx-27017) refuse NaN
    return value
