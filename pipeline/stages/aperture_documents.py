"""The aperture stage's documents: one ``apertures`` document per found aperture (pixels,
centroid and RA/Dec, GeoJSON point, matched catalog star, parameters), the atomic
replacement of a cube's apertures, and the flat pixel view of a CCD's apertures."""

from __future__ import annotations

import math

import numpy as np
import pymongo
from pymongo import ReplaceOne

from pipeline.catalog import Catalog, match

LABEL_BASE = 10000          # label = row * LABEL_BASE + col of the brightest pixel


def documents(found, wcs, origin, ccd_key, cube_id, tile, star_table, parameters, run, now):
    sector, camera, ccd = ccd_key
    row0, col0 = int(origin[0]), int(origin[1])
    n = len(found)
    crow = np.array([r["centroid"][0] for r in found], dtype=np.float64)
    ccol = np.array([r["centroid"][1] for r in found], dtype=np.float64)
    ra = dec = np.full(n, np.nan)
    if wcs is not None and n:
        ra, dec = wcs.all_pix2world(ccol, crow, 0)
    docs = []
    for i, rec in enumerate(found):
        br, bc = rec["brightest"][0] + row0, rec["brightest"][1] + col0
        label = int(br) * LABEL_BASE + int(bc)
        core_r0 = (int(math.floor(rec["centroid"][0] + 0.5)) // tile) * tile
        core_c0 = (int(math.floor(rec["centroid"][1] + 0.5)) // tile) * tile
        # an array until the catalog write (``replace_apertures`` makes it the BSON
        # list): the documents travel between workers, and lists of pairs pickle slowly
        pixels = np.stack([rec["rows"] + row0, rec["cols"] + col0], axis=1).astype(np.int64)
        has_sky = bool(np.isfinite(ra[i]) and np.isfinite(dec[i]))
        doc = {
            "sector": sector, "camera": camera, "ccd": ccd, "cube": cube_id, "label": label,
            "tile": {"row": core_r0 + row0, "col": core_c0 + col0, "size": tile},
            "pixels": pixels, "n_pixels": rec["n_pixels"], "flux": rec["flux"],
            "centroid": {"row": rec["centroid"][0] + row0, "col": rec["centroid"][1] + col0,
                         "ra": float(ra[i]) if has_sky else None,
                         "dec": float(dec[i]) if has_sky else None},
            "brightest": {"row": int(br), "col": int(bc)},
            "ra": float(ra[i]) if has_sky else None, "dec": float(dec[i]) if has_sky else None,
            "star": None, "n_stars": rec["n_stars"], "parameters": parameters,
            "run": run, "created": now,
        }
        if has_sky:
            lon = ((float(ra[i]) + 180.0) % 360.0) - 180.0
            doc["position"] = {"type": "Point", "coordinates": [lon, float(dec[i])]}
        if rec["star"] is not None and star_table is not None:
            s = star_table[rec["star"]]
            doc["star"] = {"id": _plain(s["id"]), "ra": float(s["ra"]), "dec": float(s["dec"]),
                           "tmag": float(s["tmag"]), "row": float(s["row"]) + row0,
                           "col": float(s["col"]) + col0,
                           "distance": float(math.hypot(s["row"] - rec["centroid"][0],
                                                        s["col"] - rec["centroid"][1]))}
        docs.append(doc)
    return docs


def _plain(v):
    """A catalog id as a BSON-friendly scalar."""
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, bytes):
        return v.decode()
    return v if isinstance(v, (int, float, str)) else str(v)


# ============================================================ catalog writes
def replace_apertures(catalog: Catalog, ccd_key, cube_id: str, docs: list[dict], run: str,
                      transactions: bool | None = None) -> tuple[str, int]:
    """Make ``docs`` the apertures of cube ``cube_id``: the cube's earlier apertures go
    and no label is ever held twice (the unique index). In one transaction where the
    server has them; otherwise upserts by label, then removal of what the earlier run
    left. Returns (mode, number of earlier documents removed)."""
    sector, camera, ccd = ccd_key
    coll = catalog.apertures
    scope = {"sector": sector, "camera": camera, "ccd": ccd}
    labels = [d["label"] for d in docs]
    stale = {**scope, "$or": [{"cube": cube_id}, {"label": {"$in": labels}}]}
    if transactions is not False:
        try:
            with catalog.client.start_session() as session:
                def body(s):
                    removed = coll.delete_many(stale, session=s).deleted_count
                    for start in range(0, len(docs), 2000):
                        coll.insert_many([as_bson(d) for d in docs[start:start + 2000]],
                                         ordered=False, session=s)
                    return removed
                removed = session.with_transaction(body)
            return "transaction", removed
        except pymongo.errors.OperationFailure as exc:
            if not _no_transactions(exc) or transactions is True:
                raise
        except pymongo.errors.ConfigurationError:
            if transactions is True:
                raise
    for start in range(0, len(docs), 1000):
        coll.bulk_write([ReplaceOne(match(**scope, label=d["label"]), as_bson(d), upsert=True)
                         for d in docs[start:start + 1000]], ordered=False)
    removed = coll.delete_many({**scope, "cube": cube_id, "run": {"$ne": run}}).deleted_count
    return "upsert", removed


def as_bson(doc: dict) -> dict:
    """A copy of an aperture document as the catalog stores it: the pixel array as a
    list of [row, col] pairs (and no ``_id`` added to the caller's dict)."""
    pixels = doc["pixels"]
    return {**doc, "pixels": pixels.tolist() if isinstance(pixels, np.ndarray) else pixels}


def _no_transactions(exc: pymongo.errors.OperationFailure) -> bool:
    text = str(exc).lower()
    return exc.code in (20, 263) or "transaction numbers are only allowed" in text \
        or "transactions are not supported" in text


def aperture_pixels(catalog: Catalog, sector: int, camera: int, ccd: int,
                    cube: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A CCD's apertures as flat arrays, one entry per pixel: (label, row, col) in CCD
    science coordinates, sorted by label then pixel. ``cube`` limits them to one cube."""
    query = {"sector": int(sector), "camera": int(camera), "ccd": int(ccd)}
    if cube is not None:
        query["cube"] = cube
    labels, rows, cols = [], [], []
    for doc in catalog.apertures.find(query, {"_id": 0, "label": 1, "pixels": 1}).sort("label", 1):
        pix = np.asarray(doc["pixels"], dtype=np.int64).reshape(-1, 2)
        labels.append(np.full(len(pix), doc["label"], dtype=np.int64))
        rows.append(pix[:, 0])
        cols.append(pix[:, 1])
    if not labels:
        return (np.empty(0, np.int64),) * 3
    return np.concatenate(labels), np.concatenate(rows), np.concatenate(cols)
