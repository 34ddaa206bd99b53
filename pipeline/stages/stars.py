"""Star catalogs on a cube: the cube's WCS from its frame documents, and the catalog
stars (a CSV/FITS file, a Table, or the ``stars`` collection) in cube pixels, for the
aperture stage's watershed and naming."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pipeline.catalog import Catalog

STAR_MARGIN = 8             # px: stars this far outside a window can still claim its peaks
BAD_QUALITY = 1 | 2 | 4 | 8 | 32 | 64 | 128 | 4096   # DESIGN §4 default bitmask


def cube_wcs(catalog: Catalog, cube_id: str):
    """WCS of the cube's pixel grid (0-based col, row) from its first good frame's
    document, or None when no frame document carries one."""
    from astropy.io import fits
    from astropy.wcs import WCS

    query = {"cube": cube_id, "status": "ingested", "wcs": {"$ne": None}}
    docs = list(catalog.frames.find(query, {"_id": 0, "wcs": 1, "quality": 1, "cube_index": 1})
                .sort("cube_index", 1))
    if not docs:
        return None
    good = [d for d in docs if not int(d.get("quality") or 0) & BAD_QUALITY]
    header = fits.Header.fromstring((good or docs)[0]["wcs"], sep="\n")
    return WCS(header, relax=True)


def load_stars(source, catalog: Catalog | None, wcs, shape, margin: float = STAR_MARGIN):
    """Catalog stars on a cube: an astropy Table with id, ra, dec, tmag and their cube
    pixel position row, col (0-based), for stars within ``margin`` px of the cube.
    ``source``: a CSV/FITS path, a Table or dict of columns, or "catalog" (the
    ``stars`` collection, fetched by an RA/Dec box around the cube). Returns (table,
    a short description of the source)."""
    from astropy.table import Table

    if wcs is None:
        raise ValueError("a star catalog needs the cube's WCS, but no frame document has one")
    nr, nc = shape
    if isinstance(source, str) and source in ("catalog", "stars", "mongo"):
        table = _stars_from_collection(catalog, wcs, shape, margin)
        described = "stars collection"
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        fmt = "ascii.csv" if path.suffix.lower() in (".csv", ".txt") else None
        table = Table.read(path, format=fmt) if fmt else Table.read(path)
        described = path.name
    else:
        table = source if isinstance(source, Table) else Table(source)
        described = "table"
    table = _standard_columns(table)
    if len(table):
        x, y = wcs.all_world2pix(np.asarray(table["ra"], float), np.asarray(table["dec"], float), 0)
    else:
        x = y = np.empty(0)
    table["row"] = np.asarray(y, dtype=np.float64)
    table["col"] = np.asarray(x, dtype=np.float64)
    keep = (np.isfinite(table["row"]) & np.isfinite(table["col"]) & np.isfinite(table["tmag"])
            & (table["row"] > -margin) & (table["row"] < nr - 1 + margin)
            & (table["col"] > -margin) & (table["col"] < nc - 1 + margin))
    return table[keep], described


def _standard_columns(table):
    from astropy.table import Table

    names = {n.lower(): n for n in table.colnames}
    missing = [k for k in ("ra", "dec", "tmag") if k not in names]
    if missing:
        raise ValueError(f"star catalog lacks column(s) {missing}; it needs id, ra, dec, tmag "
                         f"(has {table.colnames})")
    ids = table[names["id"]] if "id" in names else np.arange(len(table))
    return Table({"id": ids, "ra": np.asarray(table[names["ra"]], float),
                  "dec": np.asarray(table[names["dec"]], float),
                  "tmag": np.asarray(table[names["tmag"]], float)})


def _stars_from_collection(catalog: Catalog, wcs, shape, margin):
    """Stars of the ``stars`` collection in an RA/Dec box around the cube (a box on the
    indexed fields, RA wrap and poles included), with their exact pixel test after."""
    from astropy.table import Table

    nr, nc = shape
    edge_r = np.r_[np.linspace(-margin, nr - 1 + margin, 17), np.full(17, nr - 1 + margin),
                   np.linspace(-margin, nr - 1 + margin, 17), np.full(17, -margin)]
    edge_c = np.r_[np.full(17, -margin), np.linspace(-margin, nc - 1 + margin, 17),
                   np.full(17, nc - 1 + margin), np.linspace(-margin, nc - 1 + margin, 17)]
    ra, dec = wcs.all_pix2world(edge_c, edge_r, 0)
    cra, cdec = wcs.all_pix2world([(nc - 1) / 2], [(nr - 1) / 2], 0)
    pad = 0.05
    dlo, dhi = float(np.min(dec)) - pad, float(np.max(dec)) + pad
    query: dict = {"dec": {"$gte": max(dlo, -90.0), "$lte": min(dhi, 90.0)}}
    near_pole = dhi >= 89.0 or dlo <= -89.0
    # does the footprint hold a pole? then every RA
    if not near_pole:
        rel = ((np.asarray(ra) - float(cra[0]) + 180.0) % 360.0) - 180.0
        lo, hi = float(cra[0]) + rel.min() - pad, float(cra[0]) + rel.max() + pad
        lo_w, hi_w = lo % 360.0, hi % 360.0
        if hi - lo >= 360.0:
            pass
        elif lo_w <= hi_w:
            query["ra"] = {"$gte": lo_w, "$lte": hi_w}
        else:                                         # wraps through RA 0
            query["$or"] = [{"ra": {"$gte": lo_w}}, {"ra": {"$lte": hi_w}}]
    docs = list(catalog.stars.find(query, {"_id": 0, "id": 1, "ra": 1, "dec": 1, "tmag": 1}))
    return Table({"id": [d.get("id") for d in docs], "ra": [float(d["ra"]) for d in docs],
                  "dec": [float(d["dec"]) for d in docs], "tmag": [float(d["tmag"]) for d in docs]})
