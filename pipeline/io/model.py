"""The frame-stack model every reader returns: one or more cadences of one CCD region.

A calibrated FFI is a stack of one cadence over the whole science region; a TESScut
cut-out or a SPOC TPF is a stack of many cadences over a small region. Everything
downstream (ingest, the cube) sees only this model.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS


class TessFileError(ValueError):
    """A file that cannot be used, with the file and the problem named.

    ``problem`` is a short category ("not TESS", "truncated", "wrong shape",
    "missing keyword", "all-NaN image", "inconsistent" (headers, file name and
    FFI_FILE names disagree), "unsupported" (a TESS file this package does not read,
    e.g. a raw FFI or a light-curve file), "unreadable") so the catalog can count
    failures by kind; ``detail`` says exactly what was found.
    """

    def __init__(self, path, problem: str, detail: str = ""):
        self.path = str(path)
        self.problem = problem
        self.detail = detail
        super().__init__(f"{self.path}: {problem}" + (f": {detail}" if detail else ""))

    def __reduce__(self):  # picklable across Dask workers
        return (type(self), (self.path, self.problem, self.detail))


@dataclasses.dataclass
class StackInfo:
    """What a file holds, read from its headers (and, for tables, its small columns)
    without touching the pixels."""

    path: str                 # where it was read from
    name: str                 # original file name (the raw-zone key's last part)
    kind: str                 # "ffi" | "tesscut" | "tpf"
    sector: int
    camera: int
    ccd: int
    shape: tuple[int, int]    # (rows, cols) of each cadence's pixel array
    origin: tuple[int, int] | None  # (row, col) of pixel [0, 0] in CCD science
                              # coordinates; None when the file's header does not say
                              # (a malformed cut-out header; see ``notes``)
    time: np.ndarray          # (n,) float64, BTJD mid-exposure
    tstart: np.ndarray        # (n,) float64, BTJD
    tstop: np.ndarray         # (n,) float64, BTJD
    cadenceno: np.ndarray     # (n,) int64
    quality: np.ndarray       # (n,) int32, TESS DQUALITY bits
    ffi_files: list[str]      # per cadence: the FFI the pixels came from
    date_obs: str             # DATE-OBS of the file (ISO, UTC)
    primary_header: fits.Header
    image_header: fits.Header  # the pixels' HDU (FFI image, TESScut/TPF table)
    wcs: WCS | None           # WCS of the stack's own 0-based (col, row) pixel grid;
                              # None when the file has none that is usable (see notes)
    notes: list[str] = dataclasses.field(default_factory=list)
                              # what the reader repaired, dropped or could not recover
                              # (also logged as warnings); empty for a clean file

    @property
    def n_cadences(self) -> int:
        return len(self.time)

    @property
    def cube_id(self) -> str:
        """The staging cube this stack belongs to: one per sector/camera/ccd for FFIs,
        one per file for cut-outs and TPFs (their pixels cover different regions)."""
        base = f"s{self.sector:04d}-{self.camera}-{self.ccd}"
        if self.kind == "ffi":
            return base
        stem = self.name.split(".fits")[0]
        return f"{base}-{self.kind}-{_safe(stem)}"

    def header_cards(self) -> dict:
        """Primary and pixel-HDU header cards as plain JSON-able dicts."""
        return {"primary": header_to_dict(self.primary_header),
                "image": header_to_dict(self.image_header)}


@dataclasses.dataclass
class FrameStack:
    """A ``StackInfo`` plus its pixels (science region only, e-/s, float32)."""

    info: StackInfo
    flux: np.ndarray          # (n, rows, cols) float32
    flux_err: np.ndarray      # (n, rows, cols) float32

    def __repr__(self) -> str:
        i = self.info
        return (f"<FrameStack {i.kind} {i.name} s{i.sector:04d} cam{i.camera} ccd{i.ccd} "
                f"{i.n_cadences} cadence(s) of {i.shape[0]}x{i.shape[1]} px, "
                f"BTJD {i.time.min():.4f}..{i.time.max():.4f}>")


def header_to_dict(header: fits.Header) -> dict:
    """FITS cards as a dict of JSON-able values; repeated COMMENT/HISTORY joined,
    undefined values as None, non-finite floats as strings."""
    out: dict = {}
    for card in header.cards:
        key = card.keyword
        if not key:
            continue
        try:
            value = card.value
        except Exception:  # an unparsable card (astropy parses values lazily): keep its
            value = _raw_value(card)  # text, so the document is written and shows it
        if isinstance(value, fits.card.Undefined):
            value = None
        elif isinstance(value, (np.integer,)):
            value = int(value)
        elif isinstance(value, (float, np.floating)):
            value = float(value) if math.isfinite(value) else str(value)
        elif isinstance(value, (bool, np.bool_)):
            value = bool(value)
        elif not isinstance(value, (str, int)) and value is not None:
            value = str(value)
        if key in ("COMMENT", "HISTORY") and key in out:
            out[key] = f"{out[key]}\n{value}"
        else:
            out[key] = value
    return out


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def _raw_value(card) -> str:
    """The value text of a card astropy cannot parse (between '= ' and any comment),
    from the card as read: ``card.image`` would try to 'fix' it and may raise again."""
    image = getattr(card, "_image", None) or ""
    text = image[10:] if image[8:10] == "= " else image[8:]
    return text.split(" /", 1)[0].strip()
