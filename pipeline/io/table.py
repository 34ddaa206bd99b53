"""The PIXELS binary table shared by TESScut cut-outs and SPOC Target Pixel Files.

One row per cadence: TIME (BTJD mid-exposure), CADENCENO, QUALITY, FLUX and FLUX_ERR
(per-row images, e-/s), and in cut-outs FFI_FILE. The two flavours differ only in
what their columns mean (see ``Flavour``); everything else is here.

Conventions:
- Rows whose TIME is not finite are dropped (a logged warning and a note say how
  many), so the stack's time is finite and — after a stable sort if the rows were
  out of order — strictly increasing, as a cube needs. Duplicate times are an
  "inconsistent" error.
- time = TIME; tstart/tstop = time -/+ half the cadence, the cadence being TIMEDEL
  (HDU 1, else primary) or, without it, the median row spacing snapped to a nominal
  TESS cadence.
- origin (row, col) in CCD science coordinates = (2CRVnP - 1, 1CRVnP - 45) for the
  FLUX column n (else the APERTURE HDU's CRVAL2P/CRVAL1P). Those keywords give the
  1-based position of the stamp's first pixel in the FFI *image* grid, which has 44
  collateral columns before the science ones: astrocut writes cutout_lims + 1 of its
  cube, which holds the whole FFI image, and SPOC TPFs count CCD columns the same
  way (science columns 45..2092, rows 1..2048; checked with tess-point on all the
  real files in shared/data/tess). A stamp that does not overlap the 2048x2048
  science region, or non-integer keywords, leave origin None with a note.
- When origin is known, pixels outside the science region (collateral columns/rows
  astrocut includes for stamps at a CCD edge) are set to NaN, with a note.
- wcs: built from the FLUX column's keywords (1CTYPn, 1CRPXn, 1CRVLn, 1CDLTn, ijPCn),
  else from the APERTURE HDU header, and kept only if plausible (celestial, ~21"/px,
  RA_OBJ/DEC_OBJ inside the stamp); otherwise None with a note.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from astropy.io import fits

from pipeline.io.common import (CCD_SCIENCE, LEADING_COLS, as_float, as_int, cadence_days,
                                cadence_numbers, check_cadences, get, ids_from_name,
                                make_wcs, note, resolve_ids, wcs_problem)
from pipeline.io.model import StackInfo, TessFileError
from pipeline.io.source import Source


@dataclasses.dataclass(frozen=True)
class Flavour:
    kind: str                      # "tesscut" | "tpf"
    cadenceno_is_real: bool        # TPF: SPOC cadence numbers; TESScut: zeros/row counter
    ffi_file_column: bool          # TESScut: FFI_FILE names the source FFI of each row


def pixel_table(src: Source):
    """HDU 1 if it is a binary table with TIME and FLUX columns, else None."""
    if len(src.hdul) < 2 or not isinstance(src.hdul[1], fits.BinTableHDU):
        return None
    names = {n.upper() for n in src.hdul[1].columns.names}
    return src.hdul[1] if {"TIME", "FLUX"} <= names else None


def read(src: Source, flavour: Flavour, pixels: bool):
    """(info, flux, flux_err); flux and flux_err are None unless ``pixels``."""
    path, hdul = src.path, src.hdul
    notes: list[str] = []
    table = pixel_table(src)
    primary, theader = hdul[0].header, table.header
    headers = (theader, primary)
    names = [n.upper() for n in table.columns.names]
    data = table.data
    if data is None or len(data) == 0:
        raise TessFileError(path, "unreadable", "the PIXELS table has no rows")

    flux_col = names.index("FLUX")
    flux_all = data.field(flux_col)
    if flux_all.ndim != 3:
        raise TessFileError(path, "wrong shape", f"FLUX rows are {flux_all.shape[1:]}, not images")
    shape = (int(flux_all.shape[1]), int(flux_all.shape[2]))
    if "FLUX_ERR" not in names:
        raise TessFileError(path, "missing keyword", "no FLUX_ERR column")
    err_all = data.field(names.index("FLUX_ERR"))
    if err_all.shape != flux_all.shape:
        raise TessFileError(path, "wrong shape", f"FLUX_ERR rows are {err_all.shape[1:]} but "
                                                 f"FLUX rows are {flux_all.shape[1:]}")

    # -- rows: finite TIME, in time order ------------------------------------------------
    time_all = np.asarray(data.field(names.index("TIME")), dtype=np.float64)
    keep = np.flatnonzero(np.isfinite(time_all))
    if len(keep) == 0:
        raise TessFileError(path, "unreadable", f"none of the {len(time_all)} rows has a finite TIME")
    if len(keep) < len(time_all):
        note(notes, path, f"dropped {len(time_all) - len(keep)} of {len(time_all)} rows with a "
                          f"non-finite TIME")
    order = np.argsort(time_all[keep], kind="stable")
    if np.any(order != np.arange(len(keep))):
        note(notes, path, "rows were not in time order; sorted by TIME")
        keep = keep[order]
    time = time_all[keep]
    if np.any(np.diff(time) <= 0):
        dup = time[np.flatnonzero(np.diff(time) <= 0)[0]]
        raise TessFileError(path, "inconsistent", f"two rows have TIME {dup}")

    ffi_files: list[str] = []
    if flavour.ffi_file_column and "FFI_FILE" in names:
        ffi_all = data.field(names.index("FFI_FILE"))
        ffi_files = [str(ffi_all[i]).strip() for i in keep]

    # -- identity ------------------------------------------------------------------------
    header_ids = {"sector": as_int(get((primary, theader), "SECTOR")),
                  "camera": as_int(get((primary, theader), "CAMERA")),
                  "ccd": as_int(get((primary, theader), "CCD"))}
    sources = []
    if ffi_files:
        sources.append(("FFI_FILE names", _common_ids(path, ffi_files)))
    sources.append(("file name", ids_from_name(src.name)))
    sector, camera, ccd = resolve_ids(path, header_ids, sources, notes)

    # -- cadences ------------------------------------------------------------------------
    timedel = cadence_days(get(headers, "TIMEDEL"), np.diff(time) if len(time) > 1 else None,
                           path, notes)
    tstart, tstop = time - timedel / 2.0, time + timedel / 2.0
    cadenceno = _cadenceno(path, flavour, names, data, keep, tstart, timedel, primary, theader,
                           notes)
    if "QUALITY" in names:
        quality = np.asarray(data.field(names.index("QUALITY"))[keep], dtype=np.int32)
    else:
        note(notes, path, "no QUALITY column; quality set to 0")
        quality = np.zeros(len(keep), dtype=np.int32)

    # -- geometry ------------------------------------------------------------------------
    n = flux_col + 1
    aperture = _aperture_header(hdul)
    origin = _origin(path, theader, aperture, n, shape, notes)
    target = None
    ra, dec = as_float(get((primary, theader), "RA_OBJ")), as_float(get((primary, theader), "DEC_OBJ"))
    if ra is not None and dec is not None:
        target = (ra, dec)
    wcs = _wcs(path, theader, aperture, n, shape, target, notes)

    # -- pixels --------------------------------------------------------------------------
    flux = np.ascontiguousarray(flux_all[keep], dtype=np.float32)
    if not np.isfinite(flux).any():
        raise TessFileError(path, "all-NaN image",
                            f"every one of the {len(keep)} cadences is entirely NaN")
    flux_err = None
    if pixels:
        flux_err = np.ascontiguousarray(err_all[keep], dtype=np.float32)
        if origin is not None:
            outside = _outside_science(origin, shape)
            if outside.any():
                note(notes, path, f"{int(outside.sum())} of {outside.size} stamp pixels lie "
                                  f"outside the CCD science region; set to NaN")
                flux[:, outside] = np.nan
                flux_err[:, outside] = np.nan
    elif origin is not None and _outside_science(origin, shape).any():
        note(notes, path, f"{int(_outside_science(origin, shape).sum())} stamp pixels lie "
                          f"outside the CCD science region; read() sets them to NaN")

    date_obs = get((primary, theader), "DATE-OBS")
    info = StackInfo(
        path=path, name=src.name, kind=flavour.kind, sector=sector, camera=camera, ccd=ccd,
        shape=shape, origin=origin, time=time, tstart=tstart, tstop=tstop,
        cadenceno=cadenceno, quality=quality, ffi_files=ffi_files,
        date_obs=str(date_obs or ""), primary_header=primary.copy(),
        image_header=theader.copy(), wcs=wcs, notes=notes)
    return info, (flux if pixels else None), flux_err


def _common_ids(path: str, ffi_files: list[str]) -> dict:
    """sector/camera/ccd shared by every FFI_FILE entry (differing entries: an error)."""
    found = {tuple(sorted(ids_from_name(f).items())) for f in set(ffi_files)}
    found.discard(())
    if len(found) > 1:
        raise TessFileError(path, "inconsistent",
                            f"FFI_FILE entries come from different sectors/cameras/CCDs: "
                            f"{sorted(dict(f) for f in found)[:3]}")
    return dict(found.pop()) if found else {}


def _cadenceno(path, flavour, names, data, keep, tstart, timedel, primary, theader, notes):
    column = None
    if "CADENCENO" in names:
        column = np.asarray(data.field(names.index("CADENCENO"))[keep], dtype=np.int64)
    if flavour.cadenceno_is_real and column is not None:
        if np.all(np.diff(column) > 0) and np.all(column > 0):
            return check_cadences(path, column, "the CADENCENO column")
        note(notes, path, "CADENCENO is not strictly increasing; cadence numbers derived "
                          "from the times instead")
    ffiindex = as_int(get((primary, theader), "FFIINDEX"))
    anchor = as_float(get((primary, theader), "TSTART"))
    if ffiindex is not None and anchor is not None and flavour.kind == "tesscut":
        cadenceno = cadence_numbers(tstart, timedel, ffiindex, anchor, path=path)
        how = "FFIINDEX + round((tstart - TSTART) / TIMEDEL)"
    else:
        cadenceno = cadence_numbers(tstart, timedel, path=path)
        how = "round(tstart / TIMEDEL)"
    if not flavour.cadenceno_is_real:
        # TESScut never knows the FFI cadence numbers: astrocut writes 0, early
        # TESScut a row counter. Not worth a warning: it is always so.
        notes.append(f"CADENCENO column is not a cadence number in cut-outs; cadenceno = {how}")
    if np.any(np.diff(cadenceno) <= 0):
        raise TessFileError(path, "inconsistent",
                            f"cadence numbers derived as {how} are not strictly increasing "
                            f"(times closer than one cadence)")
    return cadenceno


def _aperture_header(hdul) -> fits.Header | None:
    for hdu in hdul[2:]:
        if hdu.name == "APERTURE" and isinstance(hdu, (fits.ImageHDU,)):
            return hdu.header
    return None


def _origin(path, theader, aperture, n, shape, notes):
    col = as_int(theader.get(f"1CRV{n}P"))
    row = as_int(theader.get(f"2CRV{n}P"))
    where = f"1CRV{n}P/2CRV{n}P"
    if (col is None or row is None) and aperture is not None:
        col, row = as_int(aperture.get("CRVAL1P")), as_int(aperture.get("CRVAL2P"))
        where = "APERTURE CRVAL1P/CRVAL2P"
    if col is None or row is None:
        note(notes, path, f"no integer 1CRV{n}P/2CRV{n}P or APERTURE CRVAL1P/CRVAL2P: "
                          f"position on the CCD unknown (origin None)")
        return None
    row0, col0 = row - 1, col - 1 - LEADING_COLS
    rows, cols = shape
    if row0 >= CCD_SCIENCE or row0 + rows <= 0 or col0 >= CCD_SCIENCE or col0 + cols <= 0:
        note(notes, path, f"{where} = {col}, {row} put the {rows}x{cols} stamp at science "
                          f"(row {row0}, col {col0}), off the CCD: position on the CCD unknown "
                          f"(origin None)")
        return None
    return (row0, col0)


def _outside_science(origin, shape) -> np.ndarray:
    row0, col0 = origin
    rows = row0 + np.arange(shape[0])
    cols = col0 + np.arange(shape[1])
    inside = ((rows >= 0) & (rows < CCD_SCIENCE))[:, None] & ((cols >= 0) & (cols < CCD_SCIENCE))[None, :]
    return ~inside


def _column_wcs_header(theader: fits.Header, n: int) -> fits.Header:
    """The FLUX column's binary-table image-array WCS keywords as an image header."""
    out = fits.Header()
    out["WCSAXES"] = 2
    for i in (1, 2):
        for key, image_key in (("CTYP", "CTYPE"), ("CRPX", "CRPIX"), ("CRVL", "CRVAL"),
                               ("CDLT", "CDELT"), ("CUNI", "CUNIT")):
            value = theader.get(f"{i}{key}{n}")
            if value is not None:
                if image_key in ("CTYPE", "CUNIT") and not isinstance(value, str):
                    raise ValueError(f"{i}{key}{n} = {value!r} is not a string")
                out[f"{image_key}{i}"] = value
        for j in (1, 2):
            for key, image_key in (("PC", "PC"), ("CD", "CD")):
                value = theader.get(f"{i}{j}{key}{n}")
                if value is not None:
                    out[f"{image_key}{i}_{j}"] = value
    for key in ("RADESYS", "EQUINOX"):
        if theader.get(key) is not None:
            out[key] = theader[key]
    if "CTYPE1" not in out or "CRVAL1" not in out:
        raise ValueError(f"no 1CTYP{n}/1CRVL{n} keywords")
    return out


def _wcs(path, theader, aperture, n, shape, target, notes):
    tried = []
    candidates = [("FLUX column keywords", lambda: make_wcs(_column_wcs_header(theader, n)))]
    if aperture is not None:
        candidates.append(("APERTURE header", lambda: make_wcs(aperture)))
    for label, build in candidates:
        try:
            wcs = build()
        except Exception as exc:
            tried.append(f"{label}: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}")
            continue
        problem = wcs_problem(wcs, shape, target)
        if problem is None:
            if tried:
                note(notes, path, f"WCS from the {label} ({'; '.join(tried)})")
            return wcs
        tried.append(f"{label}: {problem}")
    note(notes, path, f"no usable WCS ({'; '.join(tried)}); wcs None")
    return None
