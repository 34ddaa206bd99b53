"""Readers for TESS files: calibrated FFIs, TESScut cut-outs, SPOC TPFs.

    read_info(path) -> StackInfo   # headers (+ a cut-out's small columns), no FFI pixels
    read(path) -> FrameStack       # info + float32 flux/flux_err (n, rows, cols), e-/s

``path``: a local path or an fsspec URL ("file://...", "s3://bucket/raw/..."), plain
or gzipped FITS (told from the content). The kind is detected from the content
(``pipeline.io.detect``); each kind has its module (``ffi``, ``tesscut``, ``tpf``,
sharing ``table``). Every problem is a ``TessFileError(path, problem, detail)`` with
problem one of "not TESS", "truncated", "wrong shape", "missing keyword",
"all-NaN image", "inconsistent", "unsupported", "unreadable". What a reader repaired
or could not recover (dropped rows, a header value taken from a file name, an
unusable WCS, an unknown CCD position) is in ``StackInfo.notes`` and logged as a
warning on the "pipeline.io" logger.

Decisions (details in each module's docstring):
- Cut-out/TPF rows with a non-finite TIME are dropped (noted); time is finite and
  strictly increasing (rows sorted if needed; duplicate times: "inconsistent").
- cadenceno: FFI: FFIINDEX, else round(TSTART / TIMEDEL). TESScut (whose CADENCENO
  column is 0 or a row counter): FFIINDEX + round((tstart - TSTART) / TIMEDEL), else
  round(tstart / TIMEDEL). TPF: its CADENCENO column. A cadence number outside
  0..2^31-1 (a broken FFIINDEX, TSTART or TIMEDEL) is "inconsistent".
- TIMEDEL outside 1 s..1 d, or missing: the cadence is measured from the time stamps
  (the longest nominal TESS cadence every step is a multiple of), noted.
- quality: an FFI without DQUALITY but otherwise valid gets 0 (noted).
- origin of a cut-out/TPF: (2CRVnP - 1, 1CRVnP - 45), the keywords being 1-based
  FFI-image coordinates with 44 leading collateral columns; None (noted) when the
  keywords are malformed or put the stamp off the CCD. Stamp pixels outside the
  2048x2048 science region are NaN.
- wcs: None (noted) when the file's WCS is implausible (not ~21"/px, or RA_OBJ/DEC_OBJ
  outside the stamp), e.g. astrocut's degenerate 1x1 fit or the 2018 TESScut header.
- read_info never reads an FFI's pixels, so "all-NaN image" for an FFI comes from
  read(); for cut-outs/TPFs (whose table read_info loads anyway) from both.
- Bytes after an HDU that are neither another HDU nor blank padding (a corrupt
  extension header, trailing junk): "unreadable". Header cards astropy cannot parse are
  kept as their raw text in ``header_to_dict``.
- Robustness is fuzzed (tests/test_fuzz_readers*.py): mutated headers, shapes,
  BITPIX, NaN/inf floods, truncations give a result or a TessFileError, never another
  exception or a hang. The one other exception: an object store that stays down after
  its retries raises ``pipeline.store.StoreUnavailable`` (an outage is no bad file).
"""

from pipeline.io.detect import detect_kind
from pipeline.io.model import FrameStack, StackInfo, TessFileError, header_to_dict
from pipeline.io.reader import read, read_info

__all__ = ["FrameStack", "StackInfo", "TessFileError", "detect_kind", "header_to_dict",
           "read", "read_info"]
