"""Helpers every reader shares: keyword values, sector/camera/ccd from headers and
names, cadence numbers, WCS checks, and the notes a reader leaves on a StackInfo."""

from __future__ import annotations

import logging
import math
import re

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from pipeline.io.model import TessFileError

log = logging.getLogger("pipeline.io")

# Science region of a TESS CCD (rows, cols); cut-out pixels outside it are collateral.
CCD_SCIENCE = 2048
# Leading collateral (virtual) columns of the FFI image; science col = image col - 44.
LEADING_COLS = 44
# Collateral rows above the science rows in the FFI image (buffer, smear, virtual).
TRAILING_ROWS = 30

DAY = 86400.0
# A TIMEDEL outside these (s) is a broken keyword: a tiny one would make tstart == tstop
# and cadence numbers overflow; TESS cadences are 20 s to 30 min.
MIN_CADENCE_S, MAX_CADENCE_S = 1.0, DAY
# TESS cadences (s): FFIs 1800 (S1-26), 600 (S27-55), 200 (S56+); TPFs 120 and 20.
NOMINAL_CADENCES_S = (1800.0, 600.0, 200.0, 120.0, 20.0)

# "...-s0014-2-3-..." in SPOC FFI names, TESScut names and FFI_FILE entries.
_SCC = re.compile(r"(?:^|[-_])s(\d{4})-([1-4])-([1-4])(?=[-_.]|$)")
# "...-s0001-0000000025155310-..." in SPOC TPF names: the sector only.
_SECTOR = re.compile(r"(?:^|[-_])s(\d{4})(?=[-_])")

TESS_PIXEL_ARCSEC = 21.0


def note(notes: list[str], path: str, message: str) -> None:
    """Record something the reader repaired or could not recover, and log it."""
    notes.append(message)
    log.warning("%s: %s", path, message)


def is_blank(value) -> bool:
    return (value is None or isinstance(value, fits.card.Undefined)
            or (isinstance(value, str) and not value.strip()))


def get(headers, key):
    """First non-blank value of ``key`` in ``headers`` (in order of preference)."""
    for header in headers:
        if header is not None and key in header:
            value = header[key]
            if not is_blank(value):
                return value
    return None


def as_int(value) -> int | None:
    """An integer from a header value (int, integral float, numeric string) or None."""
    if is_blank(value) or isinstance(value, bool):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number != round(number):
        return None
    return int(round(number))


def as_float(value) -> float | None:
    if is_blank(value) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def ids_from_name(name: str) -> dict[str, int]:
    """sector/camera/ccd found in a file name or FFI_FILE entry (any subset)."""
    match = _SCC.search(name)
    if match:
        return {"sector": int(match[1]), "camera": int(match[2]), "ccd": int(match[3])}
    match = _SECTOR.search(name)
    return {"sector": int(match[1])} if match else {}


def resolve_ids(path: str, header_ids: dict[str, int | None], sources: list[tuple[str, dict]],
                notes: list[str]) -> tuple[int, int, int]:
    """sector, camera, ccd: the header's value when it has one, else the first other
    source (``sources``: (label, ids) in order of preference) that says. Any source
    that disagrees with the value used is an "inconsistent" error; a value no source
    gives is a "missing keyword" error."""
    out = []
    for key in ("sector", "camera", "ccd"):
        value, origin = header_ids.get(key), f"header {key.upper()}"
        if value is None:
            for label, ids in sources:
                if ids.get(key) is not None:
                    value, origin = ids[key], label
                    note(notes, path, f"{key.upper()} missing or empty in the header; "
                                      f"{key} {value} taken from the {label}")
                    break
        if value is None:
            raise TessFileError(path, "missing keyword",
                                f"{key.upper()} is missing and no file name says it")
        for label, ids in sources:
            if ids.get(key) is not None and ids[key] != value:
                raise TessFileError(path, "inconsistent",
                                    f"{key} is {value} from the {origin} but {ids[key]} "
                                    f"from the {label}")
        limit = {"camera": 4, "ccd": 4}.get(key)
        if value < 1 or (limit and value > limit):
            raise TessFileError(path, "inconsistent", f"{key} = {value} is not a TESS {key}")
        out.append(int(value))
    return out[0], out[1], out[2]


def cadence_days(timedel, spacing: np.ndarray | None, path: str, notes: list[str]) -> float:
    """The cadence length in days: TIMEDEL when the header has a plausible one (1 s to
    1 d), else measured from the time stamps: the longest nominal TESS cadence of which
    every spacing is a whole multiple (within 2 %), so rows dropped for a non-finite
    TIME, which leave gaps of two or more cadences, do not change it; else the median
    spacing (snapped to a nominal cadence within 2 %)."""
    value = as_float(timedel)
    if value is not None and MIN_CADENCE_S <= value * DAY <= MAX_CADENCE_S:
        return value
    if value is not None or not is_blank(timedel):
        problem = f"TIMEDEL = {timedel!r} is not a cadence of {MIN_CADENCE_S:g} s to 1 d"
        if spacing is None or not np.any(np.isfinite(spacing) & (spacing > 0)):
            raise TessFileError(path, "inconsistent", f"{problem} and the cadence cannot be "
                                                      "measured")
        note(notes, path, f"{problem}; measured from the time stamps instead")
    elif spacing is None or not np.any(np.isfinite(spacing) & (spacing > 0)):
        raise TessFileError(path, "missing keyword",
                            "TIMEDEL is missing and the cadence cannot be measured")
    steps = spacing[np.isfinite(spacing) & (spacing > 0)] * DAY
    for seconds in NOMINAL_CADENCES_S:
        multiples = steps / seconds
        if np.all(multiples > 0.98) and np.all(np.abs(multiples - np.round(multiples)) <= 0.02):
            note(notes, path, f"TIMEDEL missing; cadence {seconds:g} s from the time stamps")
            return seconds / DAY
    measured = float(np.median(steps))
    for seconds in NOMINAL_CADENCES_S:
        if abs(measured - seconds) <= 0.02 * seconds:
            note(notes, path, f"TIMEDEL missing; cadence {seconds:g} s from the median "
                              f"time step")
            return seconds / DAY
    note(notes, path, f"TIMEDEL missing; cadence {measured:.2f} s measured from the "
                      f"time stamps (not a nominal TESS cadence)")
    return measured / DAY


def cadence_numbers(tstart: np.ndarray, timedel: float, ffiindex: int | None = None,
                    anchor: float | None = None, path: str = "") -> np.ndarray:
    """Cadence numbers from start times. With the SPOC FFI counter ``ffiindex`` of the
    cadence that starts at ``anchor``: ffiindex + round((tstart - anchor) / timedel).
    Without it: round(tstart / timedel), a number that counts cadence intervals since
    BTJD 0 — unique and increasing for one cadence length, the same for a frame read
    from its FFI or from a cut-out of it. Checked with ``check_cadences``."""
    with np.errstate(all="ignore"):
        if ffiindex is not None and anchor is not None:
            values = float(ffiindex) + np.round((tstart - anchor) / timedel)
            how = "FFIINDEX + round((tstart - TSTART) / TIMEDEL)"
        else:
            values = np.round(tstart / timedel)
            how = "round(tstart / TIMEDEL)"
    return check_cadences(path, values, how)


# A cadence number counts cadences since BTJD 0 at most (20-s cadences: ~4e6 per
# year); anything outside 0..2^31-1 comes from a broken time or counter keyword.
MAX_CADENCENO = 2 ** 31 - 1


def check_cadences(path: str, values, how: str) -> np.ndarray:
    """``values`` as int64 cadence numbers, or an "inconsistent" error when one is not
    a finite whole number in 0..MAX_CADENCENO (int64 overflow would be garbage)."""
    array = np.atleast_1d(np.asarray(values, dtype=np.float64))
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(array) | (array < 0) | (array > MAX_CADENCENO)
    if np.any(bad):
        first = array[np.flatnonzero(bad)[0]]
        raise TessFileError(path, "inconsistent", f"cadence number {first!r} from {how} is "
                            f"outside 0..{MAX_CADENCENO} (a broken time or counter keyword)")
    return np.asarray(array, dtype=np.int64)


def wcs_problem(wcs: WCS, shape: tuple[int, int], target=None) -> str | None:
    """Why ``wcs`` cannot be the WCS of a TESS stack of ``shape`` (rows, cols), or None
    if it is plausible: celestial, a pixel scale within a factor 2 of 21"/px, and (when
    the file names its target, as cut-outs and TPFs do) the target within the stamp."""
    if wcs.naxis != 2 or not wcs.has_celestial:
        return f"not a 2-D celestial WCS (CTYPE {list(wcs.wcs.ctype)})"
    try:
        scales = proj_plane_pixel_scales(wcs.celestial) * 3600.0
    except Exception as exc:
        return f"unusable linear transformation ({type(exc).__name__}: {exc})"
    if not np.all(np.isfinite(scales)) or np.any(scales < TESS_PIXEL_ARCSEC / 2) \
            or np.any(scales > TESS_PIXEL_ARCSEC * 2):
        return (f"pixel scale {'/'.join(f'{s:.4g}' for s in scales)} arcsec/px is not TESS's "
                f"~{TESS_PIXEL_ARCSEC:g}")
    if target is not None:
        rows, cols = shape
        try:
            x, y = wcs.all_world2pix([[target[0], target[1]]], 0)[0]
        except Exception as exc:
            return f"cannot place RA_OBJ/DEC_OBJ ({type(exc).__name__}: {exc})"
        margin = 2.0
        if not (np.isfinite(x) and np.isfinite(y) and -margin - 0.5 <= x <= cols - 0.5 + margin
                and -margin - 0.5 <= y <= rows - 0.5 + margin):
            return (f"RA_OBJ/DEC_OBJ {target[0]:.5f} {target[1]:.5f} falls at pixel "
                    f"(col {x:.1f}, row {y:.1f}), outside the {rows}x{cols} stamp")
    return None


def make_wcs(header: fits.Header) -> WCS:
    """astropy WCS of an image header, without astropy's automatic 'fixes' (which only
    touch date keywords and would warn about them)."""
    return WCS(header, fix=False)
