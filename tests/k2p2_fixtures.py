"""Simulated sum images with known truth for the aperture tests, and the recovery
figures of the issue (completeness, purity, blends), shared by tests and bench."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def reference_module():
    """bench/k2p2_reference.py (the scikit-learn + scikit-image route)."""
    spec = importlib.util.spec_from_file_location("k2p2_reference", ROOT / "bench" / "k2p2_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sum_image(model, n_frames: int = 4, n_noise: int = 10, seed: int = 0) -> np.ndarray:
    """A background-subtracted sum image of a simulated scene: the mean of the first
    ``n_frames`` noiseless star images (jitter, variability, saturation bleed) plus
    Gaussian noise of the mean of ``n_noise`` frames (frame 0's noise model)."""
    stars = np.mean([model.star_image(i) for i in range(n_frames)], axis=0)
    sigma = np.sqrt(model.variance(0) / n_noise)
    rng = np.random.default_rng(seed)
    return (stars + sigma * rng.standard_normal(stars.shape)).astype(np.float32)


def blend_stars(size: int = 512, spacing: int = 25, seed: int = 0, mag=(8.0, 13.0)):
    """Pairs of stars 3–5 px apart with Δmag 0–2 on a grid (one pair per cell).
    Returns (star table, number of pairs): rows 0..n-1 are the primaries, n..2n-1
    their companions."""
    from pipeline.simulate import make_stars

    rng = np.random.default_rng(seed)
    g = np.arange(spacing // 2 + 6, size - spacing // 2 - 6, spacing)
    r, c = np.meshgrid(g, g, indexing="ij")
    r = r.ravel() + rng.uniform(-0.5, 0.5, r.size)
    c = c.ravel() + rng.uniform(-0.5, 0.5, c.size)
    n = r.size
    sep = rng.uniform(3.0, 5.0, n)
    ang = rng.uniform(0.0, 2 * np.pi, n)
    m1 = rng.uniform(*mag, n)
    dm = rng.uniform(0.0, 2.0, n)
    return make_stars(np.r_[r, r + sep * np.sin(ang)], np.r_[c, c + sep * np.cos(ang)],
                      tmag=np.r_[m1, m1 + dm]), n


def star_pixels(rows, cols):
    return (np.floor(np.asarray(rows, float) + 0.5).astype(np.int64),
            np.floor(np.asarray(cols, float) + 0.5).astype(np.int64))


def coverage(masks, shape):
    """Per pixel: how many masks hold it, and the index (1-based) of the last one."""
    count = np.zeros(shape, np.int32)
    label = np.zeros(shape, np.int64)
    for k, (rr, cc) in enumerate(masks, start=1):
        count[rr, cc] += 1
        label[rr, cc] = k
    return count, label


def recovery(masks, shape, stars, mag_complete=13.0, mag_pure=15.0, isolation=3.0):
    """The issue's figures for masks [(rows, cols)] over a truth star table:
    completeness — share of stars with Tmag ≤ 13 and no brighter star within 3 px whose
    pixel lies in exactly one mask; purity — share of masks holding the pixel of at
    least one true star with Tmag ≤ 15."""
    from scipy.spatial import cKDTree

    row, col, tmag = (np.asarray(stars[k], float) for k in ("row", "col", "tmag"))
    count, label = coverage(masks, shape)
    pr, pc = star_pixels(row, col)
    on = (pr >= 0) & (pr < shape[0]) & (pc >= 0) & (pc < shape[1])
    crowded = np.zeros(len(row), bool)
    for i, j in cKDTree(np.c_[row, col]).query_pairs(isolation, output_type="ndarray"):
        crowded[i] |= tmag[j] < tmag[i]
        crowded[j] |= tmag[i] < tmag[j]
    sel = on & (tmag <= mag_complete) & ~crowded
    n_in = np.zeros(len(row), np.int64)
    n_in[on] = count[pr[on], pc[on]]
    completeness = float(np.mean(n_in[sel] == 1)) if sel.any() else float("nan")
    hit = np.zeros(len(masks) + 1, bool)
    bright = on & (tmag <= mag_pure)
    # a mask holds a star when the star's pixel is in it (masks may overlap: test each)
    index = {}
    for k, (rr, cc) in enumerate(masks, start=1):
        for r, c in zip(rr.tolist(), cc.tolist()):
            index.setdefault((r, c), []).append(k)
    for i in np.nonzero(bright)[0]:
        for k in index.get((int(pr[i]), int(pc[i])), ()):
            hit[k] = True
    purity = float(np.mean(hit[1:])) if len(masks) else float("nan")
    return {"completeness": completeness, "n_stars": int(sel.sum()), "purity": purity,
            "n_masks": len(masks)}


def blend_split(masks, shape, stars, n_pairs):
    """Share of pairs whose two stars lie in two different masks (each in one)."""
    count, label = coverage(masks, shape)
    pr, pc = star_pixels(stars["row"], stars["col"])
    a = (count[pr[:n_pairs], pc[:n_pairs]] == 1)
    b = (count[pr[n_pairs:], pc[n_pairs:]] == 1)
    la, lb = label[pr[:n_pairs], pc[:n_pairs]], label[pr[n_pairs:], pc[n_pairs:]]
    return float(np.mean(a & b & (la != lb)))


def masks_of(apertures):
    """find_apertures' records → [(rows, cols)]."""
    return [(a["rows"], a["cols"]) for a in apertures]
