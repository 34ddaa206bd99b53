"""Which kind of TESS file this is, from its content (never its name).

- not TESS: not a FITS file, or TELESCOP (primary, else HDU 1) is not 'TESS';
- "ffi": HDU 1 is an image (then HDU 2 must be the uncertainty image; a TESS file
  with an image in HDU 1 but none in HDU 2 — a raw FFI — is "unsupported");
- "tpf": HDU 1 is a PIXELS table (TIME, FLUX) and the file has a 'TARGET COSMIC RAY'
  HDU or a CREATOR naming SPOC's TargetPixelExporter;
- "tesscut": such a table without TPF markers, made by astrocut / SPOC's FfiExporter
  (CREATOR) or carrying an FFI_FILE column;
- anything else TESS (light curves, a PIXELS table of unknown origin) is "unsupported".
"""

from __future__ import annotations

from pipeline.io import ffi, table, tesscut, tpf
from pipeline.io.model import TessFileError
from pipeline.io.source import Source

KINDS = ("ffi", "tesscut", "tpf")


def detect_kind(src: Source) -> str:
    hdul = src.hdul
    primary = hdul[0].header
    telescop = primary.get("TELESCOP")
    if telescop is None and len(hdul) > 1:
        telescop = hdul[1].header.get("TELESCOP")
    if str(telescop or "").strip().upper() != "TESS":
        raise TessFileError(src.path, "not TESS",
                            "no TELESCOP keyword" if telescop is None else f"TELESCOP = {telescop!r}")
    if len(hdul) < 2:
        raise TessFileError(src.path, "unsupported", "a TESS file with no extension HDU")
    if ffi.is_ffi(src):
        return "ffi"
    if tpf.is_tpf(src):
        return "tpf"
    if tesscut.is_tesscut(src):
        return "tesscut"
    if table.pixel_table(src) is not None:
        raise TessFileError(src.path, "unsupported",
                            "a PIXELS table (TIME, FLUX) that is neither a TESScut cut-out "
                            "(astrocut/FfiExporter CREATOR or FFI_FILE column) nor a SPOC TPF")
    first = hdul[1]
    raise TessFileError(src.path, "unsupported",
                        f"HDU 1 is a {type(first).__name__} {first.name!r}, not an FFI image "
                        f"or a PIXELS table (a light curve or another TESS product?)")


READERS = {"ffi": ffi, "tesscut": tesscut, "tpf": tpf}
