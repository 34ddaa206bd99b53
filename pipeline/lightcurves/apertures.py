"""Apertures as the light-curve stage sees them, grouped into tiles.

An ``Aperture`` is a label, its pixels (row, col in CCD science coordinates, DESIGN §4)
and the tile it belongs to, plus scalar metadata copied from its ``apertures``
document (centroid, RA/Dec, flux, matched star...). ``plan_tiles`` groups apertures by
tile and gives each tile the bounding box of its apertures' pixels in the cube's
array coordinates: the only pixels the stage reads for it.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict

import numpy as np

AUTO_TILE = 256          # tile size for apertures that name no tile
_PIXEL_KEYS = (("pixels", None), ("pixel_rows", "pixel_cols"), ("rows", "cols"))
_SKIP_META = {"_id", "pixels", "pixel_rows", "pixel_cols", "rows", "cols", "mask", "parameters",
              "position", "run"}


@dataclasses.dataclass
class Aperture:
    label: object
    rows: np.ndarray             # int64, CCD science coordinates
    cols: np.ndarray
    tile: object = None
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        rows = np.asarray(self.rows, dtype=np.int64).ravel()
        cols = np.asarray(self.cols, dtype=np.int64).ravel()
        if rows.shape != cols.shape:
            raise ValueError(f"aperture {self.label}: rows and cols differ in length")
        if len(rows):
            pix = np.unique(np.stack([rows, cols], axis=1), axis=0)
            rows, cols = pix[:, 0], pix[:, 1]
        self.rows, self.cols = rows, cols

    @property
    def n_pixels(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"<Aperture {self.label}: {self.n_pixels} px, tile {self.tile}>"


def _pixels_of(doc: dict):
    for a, b in _PIXEL_KEYS:
        if b is None and a in doc and doc[a] is not None:
            pix = np.asarray(doc[a], dtype=np.int64).reshape(-1, 2)
            return pix[:, 0], pix[:, 1]
        if b is not None and a in doc and b in doc:
            return np.asarray(doc[a], dtype=np.int64), np.asarray(doc[b], dtype=np.int64)
    raise ValueError(f"aperture document {doc.get('label')!r} has no pixel list "
                     f"(expected 'pixels' as [[row, col], ...] or 'rows'/'cols')")


def _scalar(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def apertures_from_documents(docs) -> list[Aperture]:
    """``Aperture`` objects from ``apertures`` documents (DESIGN §3). Pixels come from
    ``pixels`` ([[row, col], ...]) or parallel ``rows``/``cols`` (or ``pixel_rows``/
    ``pixel_cols``) lists; scalar fields (and ``centroid``/``star`` sub-documents,
    flattened with ``_``) become the aperture's metadata."""
    out = []
    for doc in docs:
        rows, cols = _pixels_of(doc)
        meta = {}
        for key, value in doc.items():
            if key in _SKIP_META:
                continue
            if _scalar(value):
                meta[key] = value
            elif isinstance(value, dict):
                meta.update({f"{key}_{k}": v for k, v in value.items() if _scalar(v)})
        out.append(Aperture(doc["label"], rows, cols, doc.get("tile"), meta))
    return out


def load_apertures(catalog, sector: int, camera: int, ccd: int, cube_id: str | None = None) -> list[Aperture]:
    """The apertures of one CCD from the catalog (those of ``cube_id`` when the
    documents say which cube they were found in)."""
    from pipeline.catalog import match

    docs = list(catalog.apertures.find(match(sector=int(sector), camera=int(camera), ccd=int(ccd))))
    if cube_id is not None and any("cube" in d for d in docs):
        docs = [d for d in docs if d.get("cube") == cube_id]
    return apertures_from_documents(sorted(docs, key=lambda d: str(d["label"])))


def tile_key(tile) -> str:
    if tile is None or isinstance(tile, str):
        return str(tile)
    return json.dumps(tile, sort_keys=True, default=str)


@dataclasses.dataclass
class Tile:
    """The apertures of one tile and the region of the cube they need.

    ``region`` = (r0, r1, c0, c1): rows r0:r1, cols c0:c1 of the cube array (not CCD
    coordinates: CCD = array + ``origin``). ``local`` holds each aperture's pixels
    relative to the region."""

    key: str
    region: tuple[int, int, int, int]
    origin: tuple[int, int]
    apertures: list[Aperture]
    local: list[tuple[np.ndarray, np.ndarray]]

    @property
    def shape(self) -> tuple[int, int]:
        r0, r1, c0, c1 = self.region
        return r1 - r0, c1 - c0

    @property
    def labels(self) -> list:
        return [a.label for a in self.apertures]

    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Label images covering every aperture: [(labels (R, C) int32 with 1..n,
        indices into ``apertures`` of labels 1..n)]. K2P2 apertures are disjoint and
        fit in one layer; overlapping apertures go to further layers, each measured
        over the same block in memory."""
        shape = self.shape
        images: list[np.ndarray] = []
        members: list[list[int]] = []
        for i, (rr, cc) in enumerate(self.local):
            for image, mem in zip(images, members):
                if not image[rr, cc].any():
                    break
            else:
                image = np.zeros(shape, np.int32)
                mem = []
                images.append(image)
                members.append(mem)
            mem.append(i)
            image[rr, cc] = len(mem)
        return [(img, np.asarray(mem, np.int64)) for img, mem in zip(images, members)]

    def __repr__(self) -> str:
        r0, r1, c0, c1 = self.region
        return (f"<Tile {self.key}: {len(self.apertures)} apertures in rows {r0}:{r1}, "
                f"cols {c0}:{c1} of the cube>")


def plan_tiles(apertures: list[Aperture], origin, shape) -> tuple[list[Tile], list]:
    """Group apertures by tile. Pixels outside the cube (``shape``, placed at CCD
    ``origin``) are dropped; apertures left with no pixel are returned as skipped
    labels. Apertures without a tile are grouped on a 256-px grid by their pixels'
    mean position."""
    row0, col0 = (int(origin[0]), int(origin[1])) if origin is not None else (0, 0)
    nrow, ncol = int(shape[0]), int(shape[1])
    groups: dict[str, list[tuple[Aperture, np.ndarray, np.ndarray]]] = defaultdict(list)
    skipped = []
    for ap in apertures:
        rr = ap.rows - row0
        cc = ap.cols - col0
        inside = (rr >= 0) & (rr < nrow) & (cc >= 0) & (cc < ncol)
        if not inside.any():
            skipped.append(ap.label)
            continue
        rr, cc = rr[inside], cc[inside]
        key = (tile_key(ap.tile) if ap.tile is not None else
               f"auto-{int(rr.mean()) // AUTO_TILE}-{int(cc.mean()) // AUTO_TILE}")
        groups[key].append((ap, rr, cc))
    tiles = []
    for key in sorted(groups):
        members = groups[key]
        r0 = min(int(rr.min()) for _, rr, _ in members)
        r1 = max(int(rr.max()) for _, rr, _ in members) + 1
        c0 = min(int(cc.min()) for _, _, cc in members)
        c1 = max(int(cc.max()) for _, _, cc in members) + 1
        tiles.append(Tile(key, (r0, r1, c0, c1), (row0, col0), [m[0] for m in members],
                          [(rr - r0, cc - c0) for _, rr, cc in members]))
    return tiles, skipped
