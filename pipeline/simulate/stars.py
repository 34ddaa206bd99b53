"""Star tables: the random default field and explicit tables (e.g. for blends).

A star table (astropy Table) has one row per star:
``id`` (int), ``row``, ``col`` (0-based science coordinates of the centre, before
per-frame jitter), ``tmag``, ``flux`` (e-/s, flux = 10^(−0.4 (Tmag − 20.44))),
``var_type`` ('none', 'pulsator', 'solarlike', 'transit') and ``var_params`` (JSON).
"""

from __future__ import annotations

import json

import numpy as np
from astropy.table import Table

from pipeline.simulate import variability

ZERO_POINT = 20.44          # Tmag giving 1 e-/s
TMAG_RANGE = (6.0, 16.0)
COUNT_SLOPE = 0.32          # d log10 N / d Tmag
STARS_PER_CCD = 8000        # per full 2048×2048 CCD
COLUMNS = ("id", "row", "col", "tmag", "flux", "var_type", "var_params")


def tmag_to_flux(tmag):
    return 10.0 ** (-0.4 * (np.asarray(tmag, dtype=float) - ZERO_POINT))


def flux_to_tmag(flux):
    return ZERO_POINT - 2.5 * np.log10(np.asarray(flux, dtype=float))


def default_n_stars(size: int) -> int:
    """Realistic density: ~8000 stars per 2048² CCD, scaled to the area."""
    return int(round(STARS_PER_CCD * (size / 2048.0) ** 2))


def draw_tmag(rng, n, lo=TMAG_RANGE[0], hi=TMAG_RANGE[1], slope=COUNT_SLOPE):
    """Tmag with dN/dm ∝ 10^(slope·m) between lo and hi (inverse-CDF sampling)."""
    a, b = 10.0 ** (slope * lo), 10.0 ** (slope * hi)
    return np.log10(a + rng.random(n) * (b - a)) / slope


def make_stars(row, col, tmag=None, flux=None, var_type=None, var_params=None, id=None) -> Table:
    """An explicit star table. Give ``tmag`` or ``flux`` (the other is derived);
    ``var_type``/``var_params`` default to constant stars; ``var_params`` entries may
    be dicts or JSON strings."""
    row = np.atleast_1d(np.asarray(row, dtype=float))
    col = np.atleast_1d(np.asarray(col, dtype=float))
    n = len(row)
    if flux is None and tmag is None:
        raise ValueError("give tmag or flux")
    if flux is None:
        tmag = np.broadcast_to(np.asarray(tmag, dtype=float), (n,)).copy()
        flux = tmag_to_flux(tmag)
    else:
        flux = np.broadcast_to(np.asarray(flux, dtype=float), (n,)).copy()
        tmag = (flux_to_tmag(flux) if tmag is None
                else np.broadcast_to(np.asarray(tmag, dtype=float), (n,)).copy())
    if var_type is None:
        var_type = ["none"] * n
    elif isinstance(var_type, str):
        var_type = [var_type] * n
    var_type = [str(v).strip() or "none" for v in var_type]
    for v in var_type:
        if v not in variability.VAR_TYPES:
            raise ValueError(f"unknown variability type {v!r}")
    if var_params is None:
        var_params = ["{}"] * n
    var_params = [p if isinstance(p, str) else json.dumps(p) for p in var_params]
    ids = np.arange(n, dtype=np.int64) if id is None else np.asarray(id, dtype=np.int64)
    if len(col) != n or len(var_type) != n or len(var_params) != n or len(ids) != n:
        raise ValueError("star columns differ in length")
    if len(np.unique(ids)) != n:
        raise ValueError("star ids must be unique")
    return Table([ids, row, col, tmag, flux, var_type, var_params], names=COLUMNS)


def as_star_table(stars) -> Table:
    """Normalise a user table (astropy Table, dict of columns, structured array) with
    at least row, col and tmag or flux."""
    t = stars if isinstance(stars, Table) else Table(stars)
    get = (lambda k: np.asarray(t[k]) if k in t.colnames else None)
    return make_stars(get("row"), get("col"), tmag=get("tmag"), flux=get("flux"),
                      var_type=None if get("var_type") is None else [str(v) for v in t["var_type"]],
                      var_params=None if get("var_params") is None else [str(v) for v in t["var_params"]],
                      id=get("id"))


def random_stars(size: int, rng, n_stars: int | None = None, variable_fraction: float = 0.1,
                 cadence: float = 1800.0, tref: float = 0.0) -> Table:
    """The default field: uniform positions over the science region, Tmag 6–16 with
    log N ∝ 0.32 m, and a random ``variable_fraction`` of them variable (half
    pulsators, 20 % solar-like, 30 % transits). ``tref``: reference time (BTJD)."""
    n = default_n_stars(size) if n_stars is None else int(n_stars)
    if not 0.0 <= variable_fraction <= 1.0:
        raise ValueError("variable_fraction must be within 0..1")
    row = rng.uniform(-0.5, size - 0.5, n)
    col = rng.uniform(-0.5, size - 0.5, n)
    tmag = draw_tmag(rng, n)
    var_type = np.array(["none"] * n, dtype=object)
    var_params = np.array(["{}"] * n, dtype=object)
    n_var = int(round(variable_fraction * n))
    chosen = np.sort(rng.choice(n, n_var, replace=False)) if n_var else np.array([], int)
    kinds = list(variability.TYPE_WEIGHTS)
    weights = np.array([variability.TYPE_WEIGHTS[k] for k in kinds])
    for k in chosen:
        kind = kinds[int(rng.choice(len(kinds), p=weights / weights.sum()))]
        var_type[k] = kind
        var_params[k] = json.dumps(variability.draw(rng, kind, cadence, tref))
    return make_stars(row, col, tmag=tmag, var_type=list(var_type), var_params=list(var_params))
