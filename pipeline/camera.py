"""Camera facts the background needs: the boresight of each camera in each CCD's pixel
frame (DESIGN §4) and the manual-exclude list.

Boresight: (x, y) in full-CCD pixels, x = science column + 44, y = science row, from
TASOC's Sector-1 WCS averages; it lies beyond the top edge of every CCD, and the
corner glow grows with the distance from it.

Manual excludes: regions of the detector known to be unusable for some time (TASOC's
``pixel_manual_exclude``: e.g. Mars flooding camera 1 CCD 4 early in Sector 1). Each
entry names a camera and CCD, optionally a sector, a half-open range of CCD science
rows and of columns (None: all), and a BTJD time range (None: always). The list is
empty by default; pass one to the background stage or load it from a TOML/JSON file:

    [[exclude]]
    camera = 1
    ccd = 4
    sector = 1
    cols = [1536, 2048]
    time = [1325.0, 1325.88]
    reason = "Mars in the field: register overflow"

Excluded pixels get pixel flags 1|2 (not used for the background, manual exclude)
and are left out of the sum image and of the corrected flux (read as NaN).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

# (camera, ccd) -> (x, y), full-CCD pixels; DESIGN §4.
BORESIGHT: dict[tuple[int, int], tuple[float, float]] = {
    (1, 1): (2158.2, 2099.5), (1, 2): (-5.7, 2098.0), (1, 3): (2141.5, 2099.9), (1, 4): (-22.4, 2100.1),
    (2, 1): (2148.6, 2094.0), (2, 2): (-16.8, 2095.8), (2, 3): (2151.4, 2105.7), (2, 4): (-13.1, 2106.0),
    (3, 1): (2152.2, 2092.3), (3, 2): (-10.5, 2093.1), (3, 3): (2145.0, 2107.9), (3, 4): (-17.4, 2105.3),
    (4, 1): (2149.3, 2091.4), (4, 2): (-12.9, 2093.4), (4, 3): (2148.9, 2110.7), (4, 4): (-14.6, 2111.3),
}

COL_OFFSET = 44            # x = science column + 44


def boresight(camera, ccd) -> tuple[float, float] | None:
    """The boresight (x, y) of (camera, ccd), or None when unknown."""
    try:
        return BORESIGHT[(int(camera), int(ccd))]
    except (KeyError, TypeError, ValueError):
        return None


@dataclasses.dataclass(frozen=True)
class ManualExclude:
    """One manual-exclude region. Rows/cols: half-open [start, stop) in CCD science
    coordinates; time: inclusive [start, stop] in BTJD; None means "all"."""

    camera: int
    ccd: int
    rows: tuple[int, int] | None = None
    cols: tuple[int, int] | None = None
    time: tuple[float, float] | None = None
    sector: int | None = None
    reason: str = ""

    def __post_init__(self):
        for name in ("rows", "cols", "time"):
            value = getattr(self, name)
            if value is not None:
                if len(value) != 2 or not value[0] <= value[1]:
                    raise ValueError(f"manual exclude: {name} must be [start, stop], got {value}")
                object.__setattr__(self, name, tuple(value))

    def applies_to(self, sector, camera, ccd) -> bool:
        return (int(camera) == self.camera and int(ccd) == self.ccd
                and (self.sector is None or sector is None or int(sector) == self.sector))

    def active(self, time_btjd: np.ndarray) -> np.ndarray:
        """Which of the frames (mid-times, BTJD) the region is excluded in."""
        t = np.asarray(time_btjd, dtype=float)
        if self.time is None:
            return np.ones(t.shape, dtype=bool)
        return (t >= self.time[0]) & (t <= self.time[1])

    def rect(self, origin: Sequence[int], shape: Sequence[int]) -> tuple[int, int, int, int] | None:
        """[r0, r1) × [c0, c1) in the array coordinates of an image whose pixel
        [0, 0] is CCD science pixel ``origin``; None if it misses the image."""
        row0, col0 = int(origin[0]), int(origin[1])
        h, w = int(shape[0]), int(shape[1])
        r0, r1 = (0, h) if self.rows is None else (self.rows[0] - row0, self.rows[1] - row0)
        c0, c1 = (0, w) if self.cols is None else (self.cols[0] - col0, self.cols[1] - col0)
        r0, r1, c0, c1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
        return (r0, r1, c0, c1) if r0 < r1 and c0 < c1 else None

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items() if v not in (None, "")}


DEFAULT_EXCLUDES: tuple[ManualExclude, ...] = ()


def as_excludes(items: Iterable | None) -> tuple[ManualExclude, ...]:
    """ManualExclude entries from entries or dicts (None: the default, empty list)."""
    if items is None:
        return DEFAULT_EXCLUDES
    return tuple(i if isinstance(i, ManualExclude) else ManualExclude(**i) for i in items)


def load_excludes(path) -> tuple[ManualExclude, ...]:
    """Read a manual-exclude list from a TOML file (``[[exclude]]`` tables) or a JSON
    file (a list of objects, or {"exclude": [...]})."""
    path = Path(path)
    text = path.read_text()
    data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    if isinstance(data, dict):
        data = data.get("exclude", [])
    return as_excludes(data)


def frame_rects(excludes: Iterable[ManualExclude], sector, camera, ccd, time_btjd,
                origin, shape) -> list[np.ndarray]:
    """Per frame, the excluded rectangles as an (k, 4) int64 array (r0, r1, c0, c1)."""
    t = np.atleast_1d(np.asarray(time_btjd, dtype=float))
    per_frame: list[list] = [[] for _ in range(len(t))]
    for entry in excludes:
        if not entry.applies_to(sector, camera, ccd):
            continue
        rect = entry.rect(origin, shape)
        if rect is None:
            continue
        for k in np.flatnonzero(entry.active(t)):
            per_frame[k].append(rect)
    return [np.asarray(r, dtype=np.int64).reshape(-1, 4) for r in per_frame]
