"""MAST TESScut cut-outs of calibrated SPOC FFIs (astrocut, or the early SPOC
'FfiExporter' TESScut of 2018).

Layout: HDU 1 'PIXELS' table, one row per FFI cadence (TIME, TIMECORR, CADENCENO,
RAW_CNTS, FLUX, FLUX_ERR, FLUX_BKG, FLUX_BKG_ERR, QUALITY, POS_CORR1/2, FFI_FILE);
HDU 2 'APERTURE' (1 where the stamp has FFI pixels, with the stamp's WCS). FLUX is the
calibrated FFI pixel value, background NOT subtracted (FLUX_BKG is 0).

Specifics on top of ``pipeline.io.table``:
- CADENCENO is never a cadence number here (astrocut writes 0; the 2018 TESScut a
  row counter, so says its header comment). cadenceno = FFIINDEX + round((tstart -
  TSTART) / TIMEDEL) when the primary header has SPOC's FFI counter FFIINDEX of the
  first FFI (TSTART being that FFI's start) — the same number the FFI reader gives
  the FFI itself; else round(tstart / TIMEDEL), as for an FFI without FFIINDEX.
- ffi_files: the FFI_FILE column. Sector/camera/ccd missing from the header (the
  2018 cut-outs have SECTOR = '') come from the FFI_FILE names, then the file name.
"""

from __future__ import annotations

from pipeline.io import table
from pipeline.io.source import Source

FLAVOUR = table.Flavour(kind="tesscut", cadenceno_is_real=False, ffi_file_column=True)
CREATORS = ("astrocut", "ffiexporter")


def is_tesscut(src: Source) -> bool:
    """A PIXELS table (TIME, FLUX) made from FFIs: astrocut/FfiExporter CREATOR or an
    FFI_FILE column. Checked after ``tpf.is_tpf``."""
    hdu = table.pixel_table(src)
    if hdu is None:
        return False
    creator = str(src.hdul[0].header.get("CREATOR", "") or hdu.header.get("CREATOR", "")).lower()
    return (any(c in creator for c in CREATORS)
            or "FFI_FILE" in {n.upper() for n in hdu.columns.names})


def read_info(src: Source):
    return table.read(src, FLAVOUR, pixels=False)[0]


def read(src: Source):
    return table.read(src, FLAVOUR, pixels=True)
