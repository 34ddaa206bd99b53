"""Calibrated SPOC full-frame images (``*_ffic.fits``).

Layout: HDU 0 primary header; HDU 1 the calibrated image (EXTNAME
'CAMERA.CCD c.d cal'), rows x cols = 2078 x 2136 for a real FFI; HDU 2 its
uncertainty ('CAMERA.CCD c.d uncert'), the same shape. The science region is rows
0:rows-30, cols 44:cols-44 (2048 x 2048); a simulated small frame of (S+30) x (S+88)
gives S x S. The region must be square and non-empty.

Conventions (see also the package docstring):
- flux/flux_err: the science region cast to native float32 — bit-for-bit the file's
  values (FITS float32 is big-endian; the cast is exact).
- sector/camera/ccd: header keywords (HDU 1 first, then the primary); SECTOR is
  missing or empty in some real headers and then comes from the file name
  ``tess...-s0014-2-3-...``; a header/name mismatch is an "inconsistent" error.
- TSTART/TSTOP: HDU 1, else the primary; time = (TSTART + TSTOP) / 2.
- quality: DQUALITY (HDU 1, else primary). A file without DQUALITY that passes every
  other check is read with quality 0 and a note: quality is advisory, the frame is
  otherwise a valid calibrated FFI, and the note tells the catalog.
- cadenceno: FFIINDEX (SPOC's FFI counter, primary header) when present, else
  round(TSTART / TIMEDEL) with TIMEDEL from the header or, without it, TSTOP - TSTART
  snapped to the nominal TESS FFI cadence.
- wcs: the image WCS sliced to the science region (CRPIX1 - 44), so the stack's
  0-based (col, row) maps to the sky. origin = (0, 0). ffi_files = [name].
- ``read_info`` reads headers only: the pixel arrays are never touched.
"""

from __future__ import annotations

import numpy as np
from astropy.io import fits

from pipeline.io.common import (LEADING_COLS, TRAILING_ROWS, as_float, as_int, cadence_days,
                                cadence_numbers, check_cadences, get, ids_from_name,
                                make_wcs, note, resolve_ids)
from pipeline.io.model import StackInfo, TessFileError
from pipeline.io.source import Source

IMAGE_HDUS = (fits.ImageHDU, fits.CompImageHDU)


def is_ffi(src: Source) -> bool:
    """HDU 1 is an image (the structure of a calibrated or raw FFI)."""
    return len(src.hdul) > 1 and isinstance(src.hdul[1], IMAGE_HDUS)


def science_slices(shape: tuple[int, int]) -> tuple[slice, slice]:
    rows, cols = shape
    return slice(0, rows - TRAILING_ROWS), slice(LEADING_COLS, cols - LEADING_COLS)


def read_info(src: Source) -> StackInfo:
    path, hdul = src.path, src.hdul
    primary, image = hdul[0].header, hdul[1].header
    notes: list[str] = []
    if len(hdul) < 3 or not isinstance(hdul[2], IMAGE_HDUS):
        raise TessFileError(path, "unsupported",
                            "HDU 1 is an image but there is no uncertainty image in HDU 2 "
                            "(a raw or uncalibrated FFI?)")
    shape = _shape(path, hdul[1], "image (HDU 1)")
    err_shape = _shape(path, hdul[2], "uncertainty (HDU 2)")
    if err_shape != shape:
        raise TessFileError(path, "wrong shape", f"uncertainty image is {err_shape[0]}x"
                            f"{err_shape[1]} but the image is {shape[0]}x{shape[1]}")
    rows, cols = shape[0] - TRAILING_ROWS, shape[1] - 2 * LEADING_COLS
    if rows <= 0 or cols <= 0 or rows != cols:
        raise TessFileError(path, "wrong shape",
                            f"image {shape[0]}x{shape[1]} gives a science region of {rows}x"
                            f"{cols} (rows-{TRAILING_ROWS} x cols-{2 * LEADING_COLS}); an FFI's"
                            f" is square (2078x2136 -> 2048x2048)")

    headers = (image, primary)
    header_ids = {"sector": as_int(get(headers, "SECTOR")),
                  "camera": as_int(get(headers, "CAMERA")),
                  "ccd": as_int(get(headers, "CCD"))}
    sector, camera, ccd = resolve_ids(path, header_ids,
                                      [("file name", ids_from_name(src.name))], notes)

    tstart, tstop = as_float(get(headers, "TSTART")), as_float(get(headers, "TSTOP"))
    if tstart is None or tstop is None:
        missing = " and ".join(k for k, v in (("TSTART", tstart), ("TSTOP", tstop)) if v is None)
        raise TessFileError(path, "missing keyword", f"{missing} missing, empty or not finite "
                                                     "in both HDU 1 and the primary header")
    if tstop <= tstart:
        raise TessFileError(path, "inconsistent", f"TSTOP {tstop} is not after TSTART {tstart}")
    time = (tstart + tstop) / 2.0
    if not np.isfinite(time) or not np.isfinite(tstop - tstart):
        raise TessFileError(path, "inconsistent", f"TSTART {tstart} and TSTOP {tstop} do not "
                                                  "give a finite mid-exposure time")

    dquality = get(headers, "DQUALITY")
    quality = as_int(dquality)
    if quality is None:
        if dquality is not None:
            raise TessFileError(path, "inconsistent", f"DQUALITY = {dquality!r} is not an integer")
        note(notes, path, "DQUALITY missing; quality set to 0")
        quality = 0

    ffiindex = as_int(get((primary, image), "FFIINDEX"))
    if ffiindex is not None:
        cadenceno = int(check_cadences(path, ffiindex, "FFIINDEX")[0])
    else:
        timedel = cadence_days(get(headers, "TIMEDEL"), np.array([tstop - tstart]), path, notes)
        cadenceno = int(cadence_numbers(np.array([tstart]), timedel, path=path)[0])
        note(notes, path, f"FFIINDEX missing; cadenceno {cadenceno} = round(TSTART / TIMEDEL)")

    date_obs = get(headers, "DATE-OBS")
    if date_obs is None:
        note(notes, path, "DATE-OBS missing")

    return StackInfo(
        path=path, name=src.name, kind="ffi", sector=sector, camera=camera, ccd=ccd,
        shape=(rows, cols), origin=(0, 0),
        time=np.array([time]), tstart=np.array([tstart]),
        tstop=np.array([tstop]), cadenceno=np.array([cadenceno], dtype=np.int64),
        quality=np.array([quality], dtype=np.int32), ffi_files=[src.name],
        date_obs=str(date_obs or ""), primary_header=primary.copy(),
        image_header=image.copy(), wcs=_science_wcs(path, image, shape, notes), notes=notes)


def read(src: Source, out: tuple[np.ndarray, np.ndarray] | None = None):
    """Info and science pixels. ``out``: (flux, flux_err) float32 arrays of shape
    (1, rows, cols) to fill instead of allocating (ingest assembles whole time chunks
    this way, with one copy per pixel)."""
    info = read_info(src)
    rows, cols = science_slices(_shape(src.path, src.hdul[1], "image (HDU 1)"))
    flux_out, err_out = out if out is not None else (None, None)
    flux = _pixels(src, 1, rows, cols, None if flux_out is None else flux_out[0])
    if not np.isfinite(flux).any():
        raise TessFileError(src.path, "all-NaN image",
                            f"no finite pixel in the {info.shape[0]}x{info.shape[1]} science region")
    flux_err = _pixels(src, 2, rows, cols, None if err_out is None else err_out[0])
    return info, flux[np.newaxis], flux_err[np.newaxis]


def _shape(path: str, hdu, what: str) -> tuple[int, int]:
    shape = tuple(int(n) for n in hdu.shape)  # from the header; no data is read
    if len(shape) != 2:
        raise TessFileError(path, "wrong shape", f"{what} has {len(shape)} axes {shape}; "
                                                 "an FFI image has 2")
    return shape  # type: ignore[return-value]


def _pixels(src: Source, index: int, rows: slice, cols: slice,
            out: np.ndarray | None = None) -> np.ndarray:
    view = _unscaled_float32(src, index)
    if view is None:
        data = src.hdul[index].data
        if data is None:
            raise TessFileError(src.path, "wrong shape", f"HDU {index} has no data")
        view = data
    if out is None:
        return np.ascontiguousarray(view[rows, cols], dtype=np.float32)
    out[...] = view[rows, cols]
    return out


def _unscaled_float32(src: Source, index: int) -> np.ndarray | None:
    """The image as a zero-copy big-endian view of the in-memory file, when it is a
    plain float32 image (every calibrated FFI is): astropy would copy it once more."""
    header = src.hdul[index].header
    layout = src.layout[index]
    if (src.buffer is None or header.get("BITPIX") != -32 or len(layout.naxis) != 2
            or header.get("BSCALE", 1) != 1 or header.get("BZERO", 0) != 0):
        return None
    n1, n2 = layout.naxis
    return np.frombuffer(src.buffer, dtype=">f4", count=n1 * n2,
                         offset=layout.data_offset).reshape(n2, n1)


def _science_wcs(path: str, header: fits.Header, shape, notes: list[str]):
    try:
        wcs = make_wcs(header)
    except Exception as exc:
        note(notes, path, f"no usable WCS in HDU 1 ({type(exc).__name__}: {exc})")
        return None
    if wcs.naxis != 2 or not wcs.has_celestial:
        note(notes, path, f"HDU 1 has no celestial WCS (CTYPE {list(wcs.wcs.ctype)})")
        return None
    return wcs.slice(science_slices(shape))
