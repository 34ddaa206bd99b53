"""``lightcurves`` documents: layout, array encoding and bulk upserts.

One document per aperture, keyed (sector, camera, ccd, label) — the collection's
unique index. Layout (``format`` "tess-pipeline/lightcurve/1"):

* identity: ``sector``, ``camera``, ``ccd``, ``label``, ``cube`` (staging cube id),
  ``tile``; position: ``row``, ``col`` (CCD science coordinates: the median
  flux-weighted centroid), ``ra``, ``dec`` (deg, when known); ``aperture``:
  {``rows``, ``cols``: encoded int32 arrays of the pixels (CCD science coordinates),
  ``n_pixels``, plus the aperture document's scalar fields under ``meta``}.
* time series (encoded arrays, one value per cube cadence, in time order):
  ``time`` (BTJD, <f8), ``cadenceno`` (<i4), ``flux`` (e-/s, <f8), ``flux_err``,
  ``flux_bkg`` (e-/s, <f4), ``centroid_row``, ``centroid_col`` (CCD science
  coordinates, <f4), ``quality`` (<i4, see ``quality``), ``pixel_quality`` (u1),
  ``n_bad_pixels`` (<i2).
* summary (top-level, so they can be queried and sorted): ``n_cadences``,
  ``n_good``, ``median_flux``, ``mean_flux``, ``rms_hour_ppm``, ``ptp_ppm``,
  ``std_ppm`` (see ``stats``), ``quality_bitmask`` (the bits they exclude),
  ``cadence_s``, ``tstart``, ``tstop``.
* ``spectrum``: {``frequency_uhz``, ``amplitude_ppm``, ``psd_ppm2_uhz`` (encoded
  <f4, binned by ``bin``), ``n_points``, ``oversample``, ``nyquist_uhz``,
  ``resolution_uhz``, ``noise_ppm``, ``n_used``, ``tref``, ``peaks``: [{
  ``frequency_uhz``, ``amplitude_ppm``, ``phase``, ``snr``}]} or None; plus
  top-level ``peak_frequency_uhz``/``peak_amplitude_ppm`` of the strongest peak.
* ``format``, ``created`` (UTC), ``pipeline_version``.

An encoded array is {"dtype": numpy dtype string (explicit little-endian), "shape":
[...], "data": raw bytes}. A 200-s sector (~12,000 cadences) is ~0.5 MB of arrays,
far below MongoDB's 16 MB document limit; the spectrum adds at most 60 kB.

Writes are bulk ``UpdateOne(key, {"$set": document}, upsert=True)``: every field of the
layout is set each time, so re-running replaces a light curve and never duplicates
it. (``ReplaceOne`` would say the same, but nx-27017 fails to replace a document
holding binary fields.) The key is written ``{"$eq": value}`` (``catalog.match``): on
nx-27017 a bare ``{field: value}`` filter scans the whole collection, so each upsert
cost O(documents) — 46 ms per light curve at 3,000 stored, 0.3 ms with the index.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from pipeline.catalog import CatalogRef, catalog_ref, match

__all__ = ["CatalogRef", "catalog_ref", "build_document", "write_documents", "encode_array",
           "decode_array", "decode_document"]

FORMAT = "tess-pipeline/lightcurve/1"
SERIES = {
    "time": "<f8", "cadenceno": "<i4", "flux": "<f8", "flux_err": "<f4", "flux_bkg": "<f4",
    "centroid_row": "<f4", "centroid_col": "<f4", "quality": "<i4", "pixel_quality": "u1",
    "n_bad_pixels": "<i2",
}
SPECTRUM_ARRAYS = ("frequency_uhz", "amplitude_ppm", "psd_ppm2_uhz")
MAX_BATCH_BYTES = 2 << 20       # per bulk write: a server that serialises reads behind
                                # writes (nx-27017) stalls them for one batch at most (~0.3 s)


def encode_array(a, dtype: str | None = None) -> dict:
    a = np.asarray(a)
    if dtype is not None:
        a = a.astype(dtype, copy=False)
    a = np.ascontiguousarray(a)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and a.dtype.itemsize > 1):
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": a.tobytes()}


def decode_array(d: dict) -> np.ndarray:
    return np.frombuffer(d["data"], dtype=np.dtype(d["dtype"])).reshape(d["shape"]).copy()


def is_encoded(value) -> bool:
    return isinstance(value, dict) and set(value) >= {"dtype", "shape", "data"}


def decode_document(doc: dict) -> dict:
    """A copy of a light-curve document with every encoded array as numpy."""
    out = {}
    for key, value in doc.items():
        if is_encoded(value):
            out[key] = decode_array(value)
        elif isinstance(value, dict):
            out[key] = decode_document(value)
        else:
            out[key] = value
    return out


def _clean(value):
    """JSON/BSON-friendly values: numpy → python, non-finite floats → None. A NaN is
    legal BSON but not JSON, and JSON-backed servers (nx-27017) refuse the document;
    None also queries the way people expect ({"rms_hour_ppm": null})."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def build_document(*, sector, camera, ccd, label, cube, tile, aperture, series: dict,
                   stats: dict, spectrum: dict | None, ra=None, dec=None, bitmask: int,
                   version: str = "") -> dict:
    """One light-curve document (see the module docstring). ``series`` holds the
    time series as numpy arrays; ``aperture`` the Aperture."""
    good = np.isfinite(series["centroid_row"]) & np.isfinite(series["centroid_col"])
    row = float(np.median(series["centroid_row"][good])) if good.any() else math.nan
    col = float(np.median(series["centroid_col"][good])) if good.any() else math.nan
    time = np.asarray(series["time"], dtype=float)
    doc = {
        "sector": int(sector), "camera": int(camera), "ccd": int(ccd), "label": _clean(aperture.label),
        "cube": cube, "tile": tile, "row": _clean(row), "col": _clean(col),
        "ra": None if ra is None else float(ra), "dec": None if dec is None else float(dec),
        "aperture": {"rows": encode_array(aperture.rows, "<i4"), "cols": encode_array(aperture.cols, "<i4"),
                     "n_pixels": int(aperture.n_pixels),
                     "meta": {k: _clean(v) for k, v in aperture.meta.items()}},
        "quality_bitmask": int(bitmask),
        "cadence_s": float(np.median(np.diff(time)) * 86400.0) if len(time) > 1 else None,
        "tstart": float(time[0]) if len(time) else None,
        "tstop": float(time[-1]) if len(time) else None,
        "format": FORMAT, "pipeline_version": version,
        "created": dt.datetime.now(dt.timezone.utc),
    }
    doc.update({k: _clean(v) for k, v in stats.items()})
    for name, dtype in SERIES.items():
        doc[name] = encode_array(series[name], dtype)
    if spectrum is not None:
        spec = {k: (encode_array(v) if k in SPECTRUM_ARRAYS else _clean(v)) for k, v in spectrum.items()}
        doc["spectrum"] = spec
        top = spectrum["peaks"][0] if spectrum["peaks"] else None
        doc["peak_frequency_uhz"] = _clean(top["frequency_uhz"]) if top else None
        doc["peak_amplitude_ppm"] = _clean(top["amplitude_ppm"]) if top else None
    else:
        doc["spectrum"] = None
        doc["peak_frequency_uhz"] = doc["peak_amplitude_ppm"] = None
    return doc


def _size(value) -> int:
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    if isinstance(value, dict):
        return sum(_size(v) for v in value.values()) + 16
    if isinstance(value, list):
        return sum(_size(v) for v in value) + 16
    return 16


KEY = ("sector", "camera", "ccd", "label")


def write_documents(collection, docs: list[dict], max_batch_bytes: int = MAX_BATCH_BYTES) -> dict:
    """Bulk upserts keyed (sector, camera, ccd, label), in batches of at most
    ``max_batch_bytes``. Returns {"upserted": new documents, "matched": replaced ones}."""
    upserted = matched = 0
    batch, size = [], 0

    def flush():
        nonlocal upserted, matched, batch, size
        if batch:
            try:
                result = collection.bulk_write(batch, ordered=False)
            except BulkWriteError as exc:  # its message would carry every byte of the batch
                errors = [(e.get("index"), e.get("code"), str(e.get("errmsg"))[:200])
                          for e in exc.details.get("writeErrors", [])[:5]]
                raise RuntimeError(f"writing {len(batch)} light curves to "
                                   f"{collection.full_name} failed: {errors}") from None
            upserted += result.upserted_count
            matched += result.matched_count
        batch, size = [], 0

    for doc in docs:
        n = _size(doc)
        if batch and size + n > max_batch_bytes:
            flush()
        batch.append(UpdateOne(match(**{k: doc[k] for k in KEY}), {"$set": doc}, upsert=True))
        size += n
    flush()
    return {"upserted": upserted, "matched": matched}
