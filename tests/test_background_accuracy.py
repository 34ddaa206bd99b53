"""Accuracy of the background on simulated full-size (2048×2048) frames of the
camera/CCD with the strongest corner glow, against the simulator's true background.

Residual = estimate − truth, measured over pixels more than 3 px from any star
brighter than Tmag 14 (issue #3). One module-scoped fixture renders and fits three
frames (no files: the model renders in memory, bit for bit what ``simulate`` writes).
"""

from __future__ import annotations

import numpy as np
import pytest

from kernels import background as kbg
from kernels import flags as kflags
from pipeline.camera import BORESIGHT, boresight

SIZE = 2048
FRAMES = 3
SEED = 1


def _near(stars, shape, tmag_max, radius):
    """Pixels within ``radius`` px of a star brighter than ``tmag_max``."""
    out = np.zeros(shape, dtype=bool)
    sel = stars[stars["tmag"] < tmag_max]
    rr = int(np.ceil(radius))
    for row, col in zip(sel["row"], sel["col"]):
        r0, r1 = max(int(row) - rr, 0), min(int(row) + rr + 2, shape[0])
        c0, c1 = max(int(col) - rr, 0), min(int(col) + rr + 2, shape[1])
        yy, xx = np.mgrid[r0:r1, c0:c1]
        out[r0:r1, c0:c1] |= (yy - row) ** 2 + (xx - col) ** 2 <= radius ** 2
    return out


@pytest.fixture(scope="module")
def scene():
    from pipeline.simulate import build_model, sky

    camera, ccd = max(BORESIGHT, key=lambda k: sky.glow_amplitude(*k))
    model = build_model(frames=FRAMES, size=SIZE, camera=camera, ccd=ccd, seed=SEED)
    geom = kbg.geometry((SIZE, SIZE), (0, 0), boresight(camera, ccd))
    frames = []
    for i in range(FRAMES):
        img = model.science(model.render(i)[0]).astype(np.float32)
        flags = kflags.mask(img)
        mesh, table, has_radial = kbg.fit(img, flags, geom)
        frames.append({"img": img, "flags": flags, "has_radial": has_radial,
                       "residual": kbg.render(mesh, table, geom) - model.background(i),
                       "noise": np.sqrt(model.variance(i))})
    away = ~_near(model.stars, (SIZE, SIZE), 14.0, 3.0)
    corner = model.radius_map() > 2400
    return {"model": model, "geom": geom, "frames": frames, "away": away,
            "corner": corner, "camera": (camera, ccd)}


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def test_strongest_glow_and_radial_term(scene):
    assert scene["camera"] == (1, 3)
    assert scene["corner"].mean() > 0.05
    assert all(f["has_radial"] for f in scene["frames"])


def test_median_and_rms_below_single_frame_noise(scene):
    away = scene["away"]
    for f in scene["frames"]:
        res = f["residual"][away]
        assert abs(np.median(res)) < 0.2
        assert _rms(res) < np.median(f["noise"][away])


def test_corner_glow_region_rms(scene):
    """Corner (r > 2400 px from the boresight) vs the rest of the CCD, pooled over
    the frames: ≤ 2×. Frame by frame the ratio spans 0.75–2.8 on 15 simulated frames
    (the glow raises the corner's photon noise 2–3×, and where the rest of the CCD is
    at 0.035 e-/s even 0.08 e-/s in the corner exceeds 2×): ≤ 3× per frame guards
    against regressions (TASOC's raw method leaves tens of e-/s there)."""
    away, corner = scene["away"], scene["corner"]
    c = np.concatenate([f["residual"][away & corner] for f in scene["frames"]])
    o = np.concatenate([f["residual"][away & ~corner] for f in scene["frames"]])
    assert _rms(c) <= 2.0 * _rms(o)
    for f in scene["frames"]:
        assert _rms(f["residual"][away & corner]) <= 3.0 * _rms(f["residual"][away & ~corner])
        assert _rms(f["residual"][away & corner]) < 0.2


def test_no_dark_halo_around_bright_stars(scene):
    model, away = scene["model"], scene["away"]
    bright = model.stars[model.stars["tmag"] < 8]
    assert len(bright) >= 5
    halo = _near(model.stars, (SIZE, SIZE), 8.0, 10.0)
    for f in scene["frames"]:
        res = f["residual"]
        assert abs(float(np.mean(res[halo])) - float(np.mean(res[away]))) < 1.0


def test_saturation_and_bleed_columns_are_masked(scene):
    for f in scene["frames"]:
        img, flags = f["img"], f["flags"]
        saturated = img > kbg.FLUX_CUTOFF
        assert saturated.sum() >= 4                     # cores and bleed columns of bright stars
        assert np.all(flags[saturated] & kflags.NOT_USED)
        assert not np.any(flags[~saturated & np.isfinite(img) & (img >= 0)])


def test_flat_frame_returns_the_constant_and_flags_nothing(scene):
    geom = scene["geom"]
    for c in (150.0, 2345.5):
        img = np.full((SIZE, SIZE), c, dtype=np.float32)
        flags = kflags.mask(img)
        mesh, table, _ = kbg.fit(img, flags, geom)
        bkg = kbg.render(mesh, table, geom)
        assert not flags.any()
        np.testing.assert_allclose(bkg, c, rtol=0, atol=1e-3 * c / 150)
