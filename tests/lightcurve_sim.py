"""Simulated fields with known truth for the light-curve tests.

``make_field``: a star table for ``pipeline.simulate.simulate(stars=...)`` — "targets"
Tmag 8–14 on a jittered grid (constant stars, coherent pulsators and transiting
planets) plus a realistic population of fainter stars (Tmag 14–16) at random
positions, so targets have faint neighbours and blends as on a real CCD.

``write_truth_background``: the true sky as a cube's background (a perfect background
for the later stages). The accuracy figures themselves are in
``pipeline.lightcurves.validation``.
"""

from __future__ import annotations

import json
import math

import numpy as np

from pipeline.simulate import make_stars
from pipeline.simulate.geometry import sector_start
from pipeline.simulate.stars import draw_tmag
from pipeline.simulate.variability import UHZ_TO_CPD, nyquist_uhz


def make_field(size: int, n_frames: int, cadence: float, sector: int, seed: int,
               spacing: int = 22, faint_density: float = 1.0):
    rng = np.random.default_rng(seed)
    tref = sector_start(sector)
    span = n_frames * cadence / 86400.0
    grid = np.arange(spacing // 2 + 2, size - spacing // 2, spacing, dtype=float)
    rr, cc = np.meshgrid(grid, grid, indexing="ij")
    rows = rr.ravel() + rng.uniform(-3, 3, rr.size)
    cols = cc.ravel() + rng.uniform(-3, 3, rr.size)
    n = len(rows)
    tmag = rng.uniform(8.0, 14.0, n)
    kinds = rng.choice(["none", "pulsator", "transit"], size=n, p=[0.45, 0.35, 0.20])
    params = []
    f_lo = max(3.0 / span, 0.1) / UHZ_TO_CPD          # ≥ 3 cycles in the series, µHz
    f_hi = 0.8 * nyquist_uhz(cadence)
    for kind in kinds:
        if kind == "pulsator":
            k = int(rng.integers(1, 4))
            params.append({"tref": tref, "freq_uhz": list(np.exp(rng.uniform(math.log(f_lo), math.log(f_hi), k))),
                           "amp": list(np.exp(rng.uniform(math.log(1e-3), math.log(5e-2), k))),
                           "phase": list(rng.uniform(0, 2 * math.pi, k))})
        elif kind == "transit":
            period = float(rng.uniform(span / 4.0, span / 1.5))
            params.append({"period": period, "t0": tref + float(rng.uniform(0.1, 0.9)) * period,
                           "depth": float(rng.uniform(0.005, 0.03)),
                           "duration": min(0.1 * period ** (1 / 3) * float(rng.uniform(0.8, 1.3)), 0.2 * period),
                           "ingress": float(rng.uniform(0.1, 0.25))})
        else:
            params.append({})
    # fainter stars at ~ the real density of Tmag 14-16 stars (~60 % of ~8000 per CCD)
    n_faint = int(round(faint_density * 0.6 * 8000 * (size / 2048.0) ** 2))
    f_rows = rng.uniform(-0.5, size - 0.5, n_faint)
    f_cols = rng.uniform(-0.5, size - 0.5, n_faint)
    f_tmag = draw_tmag(rng, n_faint, 14.0, 16.0)
    return make_stars(np.concatenate([rows, f_rows]), np.concatenate([cols, f_cols]),
                      tmag=np.concatenate([tmag, f_tmag]),
                      var_type=list(kinds) + ["none"] * n_faint,
                      var_params=[json.dumps(p) for p in params] + ["{}"] * n_faint)


def write_truth_background(cube, truth, bitmask: int = 4271) -> None:
    """Store the true sky of every frame as the cube's ``background`` (with empty
    ``pixel_flags``) and the matching ``sumimage`` (mean corrected good frame): the
    later stages then run against a perfect background."""
    from pipeline.store import COMPRESSORS

    group = cube.group()
    n, h, w = group["flux"].shape
    chunks = group["flux"].chunks
    present = set(group.array_keys())
    for key, dtype in (("background", "float32"), ("pixel_flags", "uint8")):
        if key in present:
            del group[key]
        group.create_array(key, shape=(n, h, w), chunks=chunks, dtype=dtype, fill_value=0,
                           compressors=COMPRESSORS, dimension_names=("time", "row", "col"))
    if "sumimage" in present:
        del group["sumimage"]
    group.create_array("sumimage", shape=(h, w), chunks=(h, w), dtype="float32", fill_value=np.nan,
                       dimension_names=("row", "col"))
    bkg = np.stack([truth.background(i) for i in range(n)]).astype(np.float32)
    group["background"][...] = bkg
    good = (np.asarray(truth.frames["quality"]) & bitmask) == 0
    group["sumimage"][...] = np.mean(group["flux"][...][good] - bkg[good], axis=0).astype(np.float32)
