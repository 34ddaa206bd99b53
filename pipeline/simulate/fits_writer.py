"""SPOC-format calibrated FFI files (``tess...-s_ffic.fits``) for simulated frames.

Layout as SPOC: an empty primary HDU, HDU 1 'CAMERA.CCD c.d cal' (float32 image,
e-/s) and HDU 2 'CAMERA.CCD c.d uncert' (float32 1-σ uncertainty). Header cards follow
the real files (keywords, order and comments); SIMDATA = T and SIMSEED mark the file
as simulated. Headers carry no wall-clock time (DATE is a fixed processing date after
the sector), so the same inputs give byte-identical files.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy.io import fits

from pipeline.simulate import geometry

ORIGIN = "NASA/Ames"
CREATOR = "tess-pipeline simulate FfiExporter"
PROCVER = "spoc-5.0.0-sim"
FILEVER = "1.0"
DATA_REL = 99


def _fill(header: fits.Header, cards) -> None:
    """Set cards, cutting comments to fit 80 columns as SPOC's exporter does."""
    for key, value, comment in cards:
        room = 80 - len(fits.Card(key, value).image.rstrip()) - 3
        header[key] = (value, comment[: max(room, 0)])


def _processing_date(config) -> str:
    end = geometry.sector_start(config.sector) + geometry.SECTOR_LENGTH + 7.0
    return geometry.btjd_to_utc(end).strftime("%Y-%m-%d")


def primary_header(model, i: int) -> fits.Header:
    c = model.config
    f = model.frames[i]
    p = geometry.pointing(c.sector, c.camera)
    h = fits.Header()
    cards = [
        ("NEXTEND", 2, "number of standard extensions"),
        ("EXTNAME", "PRIMARY", "name of extension"),
        ("EXTVER", 1, "extension version number (not format version)"),
        ("SIMDATA", True, "file is based on simulated data"),
        ("SIMSEED", int(c.seed), "seed of the tess-pipeline simulation"),
        ("ORIGIN", ORIGIN, "institution responsible for creating this file"),
        ("DATE", _processing_date(c), "file creation date."),
        ("TSTART", float(f["tstart"]), "observation start time in BTJD"),
        ("TSTOP", float(f["tstop"]), "observation stop time in BTJD"),
        ("DATE-OBS", str(f["date_obs"]), "TSTART as UTC calendar date"),
        ("DATE-END", str(f["date_end"]), "TSTOP as UTC calendar date"),
        ("CREATOR", CREATOR, "pipeline job and program used to produce this file"),
        ("PROCVER", PROCVER, "SW version"),
        ("FILEVER", FILEVER, "file format version"),
        ("TIMVERSN", "OGIP/93-003", "OGIP memo number for file format"),
        ("TELESCOP", "TESS", "telescope"),
        ("INSTRUME", "TESS Photometer", "detector type"),
        ("DATA_REL", DATA_REL, "data release version number"),
        ("SECTOR", int(c.sector), "Observing sector"),
        ("CAMERA", int(c.camera), "Camera number"),
        ("CCD", int(c.ccd), "CCD chip number"),
        ("SCCONFIG", geometry.SCCONFIG, "spacecraft configuration ID"),
        ("FFIINDEX", int(f["cadenceno"]), "number of FFI cadence interval"),
        ("RADESYS", "ICRS", "reference frame of celestial coordinates"),
        ("EQUINOX", 2000.0, "equinox of celestial coordinate system"),
        ("RA_NOM", round(p["ra_nom"], 6), "[deg] RA of spacecraft boresight"),
        ("DEC_NOM", round(p["dec_nom"], 6), "[deg] Dec of spacecraft boresight"),
        ("ROLL_NOM", round(p["roll_nom"], 6), "[deg] roll angle of spacecraft"),
        ("CRMITEN", True, "spacecraft cosmic ray mitigation enabled"),
        ("CRBLKSZ", 10, "[exposures] s/c cosmic ray mitigation block siz"),
        ("CRSPOC", False, "SPOC cosmic ray cleaning enabled"),
    ]
    _fill(h, cards)
    return h


def image_header(model, i: int, kind: str) -> fits.Header:
    """Header of HDU 1 (kind 'cal') or HDU 2 (kind 'uncert')."""
    c = model.config
    f = model.frames[i]
    cad_d = c.cadence / 86400.0
    telapse = float(f["tstop"] - f["tstart"])
    h = fits.Header()
    cards = [
        ("INHERIT", True, "inherit the primary header"),
        ("EXTNAME", f"CAMERA.CCD {c.camera}.{c.ccd} {kind}", "extension name"),
        ("EXTVER", 1, "extension version number (not format version)"),
        ("SIMDATA", True, "file is based on simulated data"),
        ("TELESCOP", "TESS", "telescope"),
        ("INSTRUME", "TESS Photometer", "detector type"),
        ("CAMERA", int(c.camera), "Camera number"),
        ("CCD", int(c.ccd), "CCD chip number"),
        ("IMAGTYPE", kind, "FFI image type: raw, cal, uncert"),
        ("BUNIT", "electrons/s", "physical units of image data"),
        ("TIMEREF", "SOLARSYSTEM", "barycentric correction applied to times"),
        ("TASSIGN", "SPACECRAFT", "where time is assigned"),
        ("TIMESYS", "TDB", "time system is Barycentric Dynamical Time (TDB)"),
        ("BJDREFI", 2457000, "integer part of BTJD reference date"),
        ("BJDREFF", 0.0, "fraction of the day in BTJD reference date"),
        ("TIMEUNIT", "d", "time unit for TIME, TSTART and TSTOP"),
        ("TELAPSE", telapse, "[d] TSTOP - TSTART"),
        ("LIVETIME", telapse * c.deadc, "[d] TELAPSE multiplied by DEADC"),
        ("TSTART", float(f["tstart"]), "observation start time in BTJD"),
        ("TSTOP", float(f["tstop"]), "observation stop time in BTJD"),
        ("DATE-OBS", str(f["date_obs"]), "TSTART as UTC calendar date"),
        ("DATE-END", str(f["date_end"]), "TSTOP as UTC calendar date"),
        ("DEADC", c.deadc, "deadtime correction"),
        ("EXPOSURE", telapse * c.deadc, "[d] time on source"),
        ("TIMEPIXR", 0.5, "bin time beginning=0 middle=0.5 end=1"),
        ("TIERRELA", 1.16e-05, "[d] relative time error"),
        ("INT_TIME", c.frame_time * 0.99, "[s] photon accumulation time per frame"),
        ("READTIME", c.frame_time * 0.01, "[s] readout time per frame"),
        ("FRAMETIM", c.frame_time, "[s] frame time [INT_TIME + READTIME]"),
        ("NUM_FRM", c.n_reads, "number of frames per time stamp"),
        ("TIMEDEL", cad_d, "[d] time resolution of data"),
        ("BACKAPP", False, "background is subtracted"),
        ("DEADAPP", True, "deadtime applied"),
        ("VIGNAPP", True, "vignetting or collimator correction applied"),
        ("GAINA", 5.22, "[electrons/count] CCD output A gain"),
        ("GAINB", 5.21, "[electrons/count] CCD output B gain"),
        ("GAINC", 5.21, "[electrons/count] CCD output C gain"),
        ("GAIND", 5.26, "[electrons/count] CCD output D gain"),
        ("READNOIA", c.read_noise, "[electrons] read noise CCD output A"),
        ("READNOIB", c.read_noise, "[electrons] read noise CCD output B"),
        ("READNOIC", c.read_noise, "[electrons] read noise CCD output C"),
        ("READNOID", c.read_noise, "[electrons] read noise CCD output D"),
        ("NREADOUT", int(round(c.n_reads * c.deadc)), "number of read per cadence"),
        ("FXDOFF", 209700, "compression fixed offset"),
        ("MEANBLCA", 6700, "[count] FSW mean black level CCD output A"),
        ("MEANBLCB", 6850, "[count] FSW mean black level CCD output B"),
        ("MEANBLCC", 6750, "[count] FSW mean black level CCD output C"),
        ("MEANBLCD", 6500, "[count] FSW mean black level CCD output D"),
        ("RADESYS", "ICRS", "reference frame of celestial coordinates"),
        ("EQUINOX", 2000.0, "equinox of celestial coordinate system"),
    ]
    cards += geometry.wcs_cards(c.size, c.sector, c.camera, c.ccd)
    cards += [
        ("WCSNAMEP", "PHYSICAL", "name of world coordinate system alternate P"),
        ("WCSAXESP", 2, "number of WCS physical axes"),
        ("CTYPE1P", "RAWX", "physical WCS axis 1 type CCD col"),
        ("CUNIT1P", "PIXEL", "physical WCS axis 1 unit"),
        ("CRPIX1P", 1, "reference CCD column"),
        ("CRVAL1P", 1, "value at reference CCD column"),
        ("CDELT1P", 1.0, "physical WCS axis 1 step"),
        ("CTYPE2P", "RAWY", "physical WCS axis 2 type CCD row"),
        ("CUNIT2P", "PIXEL", "physical WCS axis 2 units"),
        ("CRPIX2P", 1, "reference CCD row"),
        ("CRVAL2P", 1, "value at reference CCD row"),
        ("CDELT2P", 1.0, "physical WCS axis 2 step"),
        ("DQUALITY", int(f["quality"]), "data quality flags"),
        ("BARYCORR", float(f["barycorr"]), "[d] barycentric time correction"),
        ("FFIINDEX", int(f["cadenceno"]), "number of FFI cadence interval"),
    ]
    _fill(h, cards)
    return h


def write_ffi(path, model, i: int, image: np.ndarray, uncert: np.ndarray) -> Path:
    """Write frame i's FFI file (atomically: a temporary name, then renamed)."""
    path = Path(path)
    stamp = f"checksum computed for simulated frame {i}"
    hdus = [fits.PrimaryHDU(header=primary_header(model, i)),
            fits.ImageHDU(image, header=image_header(model, i, "cal")),
            fits.ImageHDU(uncert, header=image_header(model, i, "uncert"))]
    hdul = fits.HDUList(hdus)
    for hdu in hdul:
        hdu.add_checksum(when=stamp)
    tmp = path.with_name(path.name + ".partial")
    hdul.writeto(tmp, overwrite=True)
    os.replace(tmp, path)
    return path
