"""Light curves as FITS files, one per star, readable by ``lightkurve.read``.

Layout (after SPOC light-curve files, so lightkurve recognises a TESS light curve:
TELESCOP = 'TESS' and a CREATOR naming a light-curve exporter):

* primary header: TELESCOP, INSTRUME, ORIGIN ('tess-pipeline'), CREATOR, PROCVER,
  DATE, OBJECT, LABEL, SECTOR, CAMERA, CCD, RA_OBJ, DEC_OBJ (deg), EQUINOX, RADESYS,
  TSTART, TSTOP; and the summary statistics MEDFLUX, RMSHOUR, PTP.
* HDU 1 'LIGHTCURVE' table, one row per cadence: TIME (BTJD = BJD − 2457000, d),
  CADENCENO, FLUX, FLUX_ERR, FLUX_BKG (e-/s), MOM_CENTR1/MOM_CENTR2 (flux-weighted
  centroid column/row in the SPOC convention: 1-based CCD pixel numbers, columns
  counting the 44 leading collateral columns, i.e. col + 45 and row + 1 in
  science coordinates), QUALITY (see ``pipeline.lightcurves.quality``),
  PIXEL_QUALITY, N_BAD_PIXELS; headers TIMEREF, TASSIGN, TIMESYS, BJDREFI/BJDREFF,
  TIMEUNIT, TELAPSE, TIMEDEL, TSTART, TSTOP. lightkurve takes FLUX as the flux and
  applies its default quality mask to the TESS bits.
* HDU 2 'APERTURE' int32 image over the aperture's bounding box: 1|2 (collected, in
  the optimal aperture, as SPOC) inside the aperture, 0 outside; CRVAL1P/CRVAL2P give
  the 1-based CCD column/row of its first pixel (SPOC convention) and, when the cube
  has a WCS, the image carries it.
* HDU 3 'SPECTRUM' table (FREQUENCY µHz, AMPLITUDE ppm, PSD ppm²/µHz) and HDU 4
  'PEAKS' table (FREQUENCY, AMPLITUDE, PHASE, SNR), when the light curve has one.

Files land in the store's curated zone,
``curated/lightcurves/s0014/2-3/tess-s0014-2-3-<label>_lc.fits``, and, when an output
folder is given, are copied there too.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import posixpath
import warnings

import numpy as np
from astropy.io import fits

from pipeline.catalog import match

from pipeline.lightcurves.lightcurve import LightCurve

COL_OFFSET = 44          # collateral columns before the science region


def lightcurve_name(sector: int, camera: int, ccd: int, label) -> str:
    lab = f"{label:08d}" if isinstance(label, (int, np.integer)) else str(label).replace("/", "_")
    return f"tess-s{int(sector):04d}-{camera}-{ccd}-{lab}_lc.fits"


def curated_key(sector: int, camera: int, ccd: int, label) -> str:
    return f"curated/lightcurves/s{int(sector):04d}/{camera}-{ccd}/{lightcurve_name(sector, camera, ccd, label)}"


def _num(value, default=None):
    return default if value is None else value


def _card(header: fits.Header, key: str, value, comment: str) -> None:
    """Set a card, dropping its comment when value and comment overflow 80 characters;
    an unknown value (None, NaN) leaves the card out."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fits.Card(key, value, comment).image
    header[key] = value if caught else (value, comment)


def to_hdulist(lc: LightCurve, wcs_header: fits.Header | None = None) -> fits.HDUList:
    """The FITS file of one light curve (see the module docstring)."""
    from pipeline import __version__

    m = lc.meta
    sector, camera, ccd, label = int(m["sector"]), int(m["camera"]), int(m["ccd"]), m["label"]
    primary = fits.PrimaryHDU()
    h = primary.header
    cards = [
        ("TELESCOP", "TESS", "telescope"), ("INSTRUME", "TESS Photometer", "detector type"),
        ("ORIGIN", "tess-pipeline", "institution responsible for creating this file"),
        ("CREATOR", "tess-pipeline LightCurveExporter", "pipeline job and program"),
        ("PROCVER", __version__, "data processing version"),
        ("DATE", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "file creation date"),
        ("OBJECT", f"s{sector:04d}-{camera}-{ccd} aperture {label}", "string version of target id"),
        ("LABEL", str(label), "aperture label"), ("SECTOR", sector, "observing sector"),
        ("CAMERA", camera, "camera number"), ("CCD", ccd, "CCD chip number"),
        ("CUBE", str(m.get("cube", "")), "staging cube the pixels came from"),
        ("RADESYS", "ICRS", "reference frame of celestial coordinates"),
        ("EQUINOX", 2000.0, "equinox of celestial coordinate system"),
        ("RA_OBJ", _num(m.get("ra")), "[deg] right ascension"),
        ("DEC_OBJ", _num(m.get("dec")), "[deg] declination"),
        ("NPIXAP", int(_num((m.get("aperture") or {}).get("n_pixels"), 0)), "pixels in aperture"),
        ("MEDFLUX", _num(m.get("median_flux")), "[e-/s] median flux of good cadences"),
        ("RMSHOUR", _num(m.get("rms_hour_ppm")), "[ppm] robust rms on 1-hour timescale"),
        ("PTP", _num(m.get("ptp_ppm")), "[ppm] robust point-to-point scatter"),
        ("QBITMASK", int(_num(m.get("quality_bitmask"), 0)), "quality bits excluded from stats"),
    ]
    for key, value, comment in cards:
        _card(h, key, value, comment)
    if len(lc):
        h["TSTART"] = (float(lc.time[0]), "[BTJD] first cadence mid-time")
        h["TSTOP"] = (float(lc.time[-1]), "[BTJD] last cadence mid-time")

    col = lc.columns
    n = len(lc)
    crow = col.get("centroid_row", np.full(n, np.nan)).astype(float)
    ccol = col.get("centroid_col", np.full(n, np.nan)).astype(float)
    columns = [
        fits.Column("TIME", "D", unit="BJD - 2457000, days", array=lc.time),
        fits.Column("CADENCENO", "J", array=col.get("cadenceno", np.arange(n)).astype(np.int32)),
        fits.Column("FLUX", "D", unit="e-/s", array=lc.flux),
        fits.Column("FLUX_ERR", "E", unit="e-/s", array=lc.flux_err.astype(np.float32)),
        fits.Column("FLUX_BKG", "E", unit="e-/s", array=col.get("flux_bkg", np.full(n, np.nan)).astype(np.float32)),
        fits.Column("MOM_CENTR1", "D", unit="pixel", array=ccol + COL_OFFSET + 1),
        fits.Column("MOM_CENTR2", "D", unit="pixel", array=crow + 1),
        fits.Column("QUALITY", "J", array=lc.quality.astype(np.int32)),
        fits.Column("PIXEL_QUALITY", "B", array=col.get("pixel_quality", np.zeros(n)).astype(np.uint8)),
        fits.Column("N_BAD_PIXELS", "I", array=col.get("n_bad_pixels", np.zeros(n)).astype(np.int16)),
    ]
    table = fits.BinTableHDU.from_columns(columns, name="LIGHTCURVE")
    th = table.header
    cad = float(np.median(np.diff(lc.time))) if n > 1 else 0.0
    for key, value, comment in [
        ("TIMEREF", "SOLARSYSTEM", "barycentric correction applied to times"),
        ("TASSIGN", "SPACECRAFT", "where time is assigned"), ("TIMESYS", "TDB", "time system is TDB"),
        ("BJDREFI", 2457000, "integer part of BTJD reference date"),
        ("BJDREFF", 0.0, "fraction of the day in BTJD reference date"),
        ("TIMEUNIT", "d", "time unit for TIME, TSTART and TSTOP"),
        ("TSTART", float(lc.time[0]) if n else 0.0, "observation start time in BTJD"),
        ("TSTOP", float(lc.time[-1]) if n else 0.0, "observation stop time in BTJD"),
        ("TELAPSE", float(lc.time[-1] - lc.time[0]) if n else 0.0, "[d] TSTOP - TSTART"),
        ("TIMEDEL", cad, "[d] time resolution of data"),
        ("OBJECT", h["OBJECT"], ""), ("SECTOR", sector, ""), ("CAMERA", camera, ""), ("CCD", ccd, ""),
    ]:
        _card(th, key, value, comment)
    hdus = [primary, table]

    ap = m.get("aperture")
    if ap is not None and len(ap["rows"]):
        rows, cols = np.asarray(ap["rows"]), np.asarray(ap["cols"])
        r0, c0 = int(rows.min()), int(cols.min())
        img = np.zeros((int(rows.max()) - r0 + 1, int(cols.max()) - c0 + 1), np.int32)
        img[rows - r0, cols - c0] = 3
        aphdu = fits.ImageHDU(img, name="APERTURE")
        ah = aphdu.header
        if wcs_header is not None:
            ah.update(_shift_wcs(wcs_header, m, r0, c0))
        ah["CRVAL1P"] = (c0 + COL_OFFSET + 1, "[pixel] CCD column of the first pixel (1-based)")
        ah["CRVAL2P"] = (r0 + 1, "[pixel] CCD row of the first pixel (1-based)")
        ah["NPIXSAP"] = (int(len(rows)), "pixels in the aperture")
        hdus.append(aphdu)

    spec = lc.spectrum
    if spec is not None:
        sp = fits.BinTableHDU.from_columns([
            fits.Column("FREQUENCY", "E", unit="uHz", array=spec.frequency.astype(np.float32)),
            fits.Column("AMPLITUDE", "E", unit="ppm", array=spec.amplitude.astype(np.float32)),
            fits.Column("PSD", "E", unit="ppm2/uHz", array=spec.psd.astype(np.float32)),
        ], name="SPECTRUM")
        _card(sp.header, "NYQUIST", float(spec.nyquist), "[uHz] Nyquist frequency")
        _card(sp.header, "RESOL", float(spec.resolution), "[uHz] 1/T")
        _card(sp.header, "NOISE", float(spec.noise), "[ppm] mean amplitude noise")
        _card(sp.header, "BINNED", int(spec.bin), "grid points per row")
        pk = spec.peaks
        peaks = fits.BinTableHDU.from_columns([
            fits.Column("FREQUENCY", "D", unit="uHz", array=np.array([p["frequency_uhz"] for p in pk], float)),
            fits.Column("AMPLITUDE", "D", unit="ppm", array=np.array([p["amplitude_ppm"] for p in pk], float)),
            fits.Column("PHASE", "D", unit="rad", array=np.array([p["phase"] for p in pk], float)),
            fits.Column("SNR", "D", array=np.array([p["snr"] for p in pk], float)),
        ], name="PEAKS")
        _card(peaks.header, "TREF", float(spec.meta.get("tref", np.nan)), "[BTJD] phase reference time")
        hdus += [sp, peaks]
    return fits.HDUList(hdus)


def _shift_wcs(header: fits.Header, meta: dict, r0: int, c0: int) -> fits.Header:
    """The cube's WCS moved to an image whose first pixel is CCD (r0, c0)."""
    origin = meta.get("_origin") or (0, 0)
    out = header.copy()
    if "CRPIX1" in out and "CRPIX2" in out:
        out["CRPIX1"] = out["CRPIX1"] - (c0 - origin[1])
        out["CRPIX2"] = out["CRPIX2"] - (r0 - origin[0])
    return out


def _cube_wcs(catalog, cube_id, cache):
    if cube_id not in cache:
        cache[cube_id] = (None, (0, 0))
        doc = catalog.frames.find_one({"cube": cube_id, "status": "ingested", "wcs": {"$ne": None}},
                                      {"wcs": 1, "origin": 1, "_id": 0})
        if doc and doc.get("wcs"):
            try:
                header = fits.Header.fromstring(doc["wcs"], sep="\n")
                cache[cube_id] = (header, tuple(doc.get("origin") or (0, 0)))
            except Exception:  # noqa: BLE001 - no usable WCS: the aperture goes without
                pass
    return cache[cube_id]


def export_fits(catalog, store, out_dir=None, sector: int | None = None, camera: int | None = None,
                ccd: int | None = None, labels=None) -> list[str]:
    """Write one FITS light curve per matching document into the store's curated zone
    and, when ``out_dir`` is given, into that folder too. Returns the paths written in
    ``out_dir`` (or the curated-zone URLs when there is none), in label order."""
    query = {k: int(v) for k, v in (("sector", sector), ("camera", camera), ("ccd", ccd)) if v is not None}
    if labels is not None:
        query["label"] = {"$in": list(labels)}
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
    wcs_cache: dict = {}
    written = []
    keys = [(d["sector"], d["camera"], d["ccd"], d["label"])
            for d in catalog.lightcurves.find(query, {"sector": 1, "camera": 1, "ccd": 1, "label": 1, "_id": 0})]
    for s, c, d, label in sorted(keys, key=lambda k: (k[0], k[1], k[2], str(k[3]))):
        doc = catalog.lightcurves.find_one(match(sector=s, camera=c, ccd=d, label=label))
        lc = LightCurve.from_document(doc)
        header, origin = _cube_wcs(catalog, doc.get("cube"), wcs_cache)
        lc.meta["_origin"] = origin
        buf = io.BytesIO()
        to_hdulist(lc, header).writeto(buf, checksum=True)
        data = buf.getvalue()
        key = curated_key(s, c, d, label)
        if store.is_local:
            store.fs.makedirs(posixpath.dirname(store.path(key)), exist_ok=True)
        with store.open(key, "wb") as f:
            f.write(data)
        if out_dir is not None:
            path = os.path.join(out_dir, lightcurve_name(s, c, d, label))
            with open(path, "wb") as f:
                f.write(data)
            written.append(path)
        else:
            written.append(store.url_of(key))
    return written
