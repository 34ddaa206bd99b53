"""Small SPOC-like calibrated FFIs for the reader tests (no simulator needed).

``write_ffi`` writes what a SPOC ``*_ffic.fits`` holds, scaled down: a primary header
(TELESCOP, SECTOR, CAMERA, CCD, FFIINDEX, TSTART/TSTOP, DATE-OBS), HDU 1
'CAMERA.CCD c.d cal' float32 image of (size+30) x (size+88) with TSTART, TSTOP,
DATE-OBS, DATE-END, TIMEDEL, DQUALITY, BARYCORR and a TAN WCS (21"/px) in its header,
and HDU 2 'CAMERA.CCD c.d uncert' of the same shape. Keywords can be dropped or
overridden to make broken files.

Also the checks the reader tests (test_io_ffi.py, test_io_tables.py) share:
``same_bits`` and ``check_stack_invariants``.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits

if TYPE_CHECKING:
    from pipeline.io import FrameStack

SECONDS = 1.0 / 86400.0


def ffi_name(sector=19, camera=1, ccd=3, stamp="2019332135924") -> str:
    return f"tess{stamp}-s{sector:04d}-{camera}-{ccd}-0164-s_ffic.fits"


def ffi_pixels(size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A sky of ~100 e-/s with a few stars, and its uncertainty, on the full image
    (science region plus collateral), float32."""
    rng = np.random.default_rng(seed)
    rows, cols = size + 30, size + 88
    image = rng.normal(100.0, 5.0, (rows, cols)).astype(np.float32)
    yy, xx = np.mgrid[0:rows, 0:cols]
    for _ in range(5):
        r, c = rng.uniform(3, size - 3), rng.uniform(47, size + 41)
        image += (rng.uniform(1e3, 1e4) * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / 2.0)).astype(np.float32)
    image[size:, :] = rng.normal(0.0, 1.0, (30, cols))          # collateral rows
    image[:, :44] = image[:, -44:] = rng.normal(0.0, 1.0, (rows, 44))  # collateral columns
    return image, np.sqrt(np.abs(image) + 25.0).astype(np.float32)


def write_ffi(path, size: int = 64, camera: int = 1, ccd: int = 3, sector: int | None = 19,
              tstart: float = 1816.0892904, cadence_s: float = 1800.0, dquality: int = 0,
              ffiindex: int | None = 28254, seed: int = 0, telescop: str = "TESS",
              image: np.ndarray | None = None, uncert: np.ndarray | None = None,
              drop: tuple[str, ...] = (), primary_extra: dict | None = None,
              image_extra: dict | None = None, compress: bool = False) -> Path:
    """Write a small calibrated FFI to ``path`` (gzipped if ``compress``); returns it.
    ``drop``: keywords removed from both headers; ``*_extra``: keywords set."""
    path = Path(path)
    if image is None or uncert is None:
        made, made_err = ffi_pixels(size, seed)
        image = made if image is None else image
        uncert = made_err if uncert is None else uncert
    tstop = tstart + cadence_s * SECONDS
    primary = fits.Header()
    primary["TELESCOP"] = (telescop, "telescope")
    primary["INSTRUME"] = ("TESS Photometer", "detector type")
    primary["CREATOR"] = ("3108 FfiExporter", "pipeline job and program")
    primary["PROCVER"] = ("spoc-4.0.14", "SW version")
    primary["DATA_REL"] = (30, "data release version number")
    primary["SECTOR"] = (sector if sector is not None else "", "Observing sector")
    primary["CAMERA"] = (camera, "Camera number")
    primary["CCD"] = (ccd, "CCD chip number")
    if ffiindex is not None:
        primary["FFIINDEX"] = (ffiindex, "number of FFI cadence interval")
    primary["TSTART"] = (tstart, "observation start time in BTJD")
    primary["TSTOP"] = (tstop, "observation stop time in BTJD")
    primary["DATE-OBS"] = ("2019-11-28T14:07:25.506", "TSTART as UTC calendar date")
    primary["RADESYS"] = ("ICRS", "reference frame of celestial coordinates")

    header = fits.Header()
    header["EXTNAME"] = f"CAMERA.CCD {camera}.{ccd} cal"
    header["TSTART"] = (tstart, "observation start time in BTJD")
    header["TSTOP"] = (tstop, "observation stop time in BTJD")
    header["DATE-OBS"] = ("2019-11-28T14:07:25.506", "TSTART as UTC calendar date")
    header["DATE-END"] = ("2019-11-28T14:37:25.506", "TSTOP as UTC calendar date")
    header["TIMEDEL"] = (cadence_s * SECONDS, "[d] time resolution of data")
    header["EXPOSURE"] = (cadence_s * 0.8 * SECONDS, "[d] time on source")
    header["BARYCORR"] = (0.0041, "[d] barycentric time correction")
    header["DQUALITY"] = (dquality, "data quality flags")
    theta = np.deg2rad(12.0)
    scale = 21.0 / 3600.0
    header["WCSAXES"] = 2
    header["CTYPE1"], header["CTYPE2"] = "RA---TAN", "DEC--TAN"
    header["CRPIX1"], header["CRPIX2"] = 44 + size / 2 + 0.5, size / 2 + 0.5
    header["CRVAL1"], header["CRVAL2"] = 65.49, 28.44
    header["CD1_1"], header["CD1_2"] = -scale * np.cos(theta), scale * np.sin(theta)
    header["CD2_1"], header["CD2_2"] = scale * np.sin(theta), scale * np.cos(theta)
    header["CUNIT1"], header["CUNIT2"] = "deg", "deg"

    uheader = fits.Header()
    uheader["EXTNAME"] = f"CAMERA.CCD {camera}.{ccd} uncert"
    for h in (primary, header, uheader):
        for key in drop:
            h.remove(key, ignore_missing=True, remove_all=True)
    primary.update(primary_extra or {})
    header.update(image_extra or {})

    hdul = fits.HDUList([fits.PrimaryHDU(header=primary),
                         fits.ImageHDU(image, header=header),
                         fits.ImageHDU(uncert, header=uheader)])
    if compress:
        plain = path.with_name(path.name + ".tmp")
        hdul.writeto(plain, overwrite=True)
        with open(plain, "rb") as src, gzip.open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        plain.unlink()
    else:
        hdul.writeto(path, overwrite=True)
    return path


def truncate(src, dst, keep_bytes: int) -> Path:
    """Copy the first ``keep_bytes`` bytes of ``src`` to ``dst``."""
    data = Path(src).read_bytes()[:keep_bytes]
    Path(dst).write_bytes(data)
    return Path(dst)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.dtype(">f4")).astype(np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def check_stack_invariants(stack: FrameStack) -> None:
    info = stack.info
    n = info.n_cadences
    assert n >= 1
    assert info.time.dtype == np.float64 and info.time.shape == (n,)
    assert np.all(np.isfinite(info.time)) and np.all(np.diff(info.time) > 0)
    assert np.all(info.tstart < info.time) and np.all(info.time < info.tstop)
    np.testing.assert_allclose((info.tstart + info.tstop) / 2, info.time, rtol=0, atol=1e-9)
    assert info.cadenceno.dtype == np.int64 and np.all(np.diff(info.cadenceno) > 0)
    assert info.quality.dtype == np.int32 and info.quality.shape == (n,)
    assert stack.flux.dtype == np.float32 and stack.flux_err.dtype == np.float32
    assert stack.flux.dtype.isnative and stack.flux_err.dtype.isnative
    assert stack.flux.shape == stack.flux_err.shape == (n, *info.shape)
    assert info.kind in ("ffi", "tesscut", "tpf")
