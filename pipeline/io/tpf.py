"""SPOC Target Pixel Files (``*_tp.fits``, 2-min or 20-s postage stamps).

Layout: HDU 1 'PIXELS' table (TIME, TIMECORR, CADENCENO, RAW_CNTS, FLUX, FLUX_ERR,
FLUX_BKG, FLUX_BKG_ERR, QUALITY, POS_CORR1/2), HDU 2 'APERTURE', HDU 3 'TARGET COSMIC
RAY' table. Told from a TESScut by the TARGET COSMIC RAY HDU or a CREATOR naming
SPOC's TargetPixelExporter.

Specifics on top of ``pipeline.io.table``:
- CADENCENO is SPOC's cadence number and is used as is (if it is not strictly
  increasing, cadence numbers are derived from the times, with a note).
- flux is the FLUX column as is: SPOC has already subtracted its background from it
  (BACKAPP = T; the background is in FLUX_BKG), unlike FFIs and cut-outs. A note says
  so, as a background estimated downstream will be a residual one.
- ffi_files is empty: a TPF's pixels do not come from FFIs.
"""

from __future__ import annotations

from pipeline.io import table
from pipeline.io.source import Source

FLAVOUR = table.Flavour(kind="tpf", cadenceno_is_real=True, ffi_file_column=False)
BACKGROUND_NOTE = ("FLUX is SPOC background-subtracted (BACKAPP = T; background in "
                   "FLUX_BKG, not read)")


def is_tpf(src: Source) -> bool:
    if table.pixel_table(src) is None:
        return False
    creator = str(src.hdul[0].header.get("CREATOR", "") or
                  src.hdul[1].header.get("CREATOR", "")).lower()
    return ("targetpixelexporter" in creator
            or any(hdu.name == "TARGET COSMIC RAY" for hdu in src.hdul))


def read_info(src: Source):
    info = table.read(src, FLAVOUR, pixels=False)[0]
    _background_note(src, info)
    return info


def read(src: Source):
    info, flux, flux_err = table.read(src, FLAVOUR, pixels=True)
    _background_note(src, info)
    return info, flux, flux_err


def _background_note(src: Source, info) -> None:
    backapp = src.hdul[1].header.get("BACKAPP")
    if backapp is True or str(backapp).strip().upper() in ("T", "TRUE"):
        info.notes.append(BACKGROUND_NOTE)
