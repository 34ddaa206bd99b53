"""Smooth sky, corner glow and scattered light (numba kernel).

Background of frame i at science pixel (r, c), in e-/s, with u = c/2047 − ½ and
v = r/2047 − ½ (−½..½ over the full CCD). A frame of S < 2048 pixels is the CCD's
first S rows and columns — what the pipeline reads from an FFI-format file, whose
science region starts at (0, 0) — and shows that region's own sky and glow: the
pattern is never squeezed into a small frame, which would put the glow where the
frame's geometry says there is none:

* sky: c0 + c1·u + c2·v + c3·u² + c4·v² + c5·u·v   (coefficients per frame, drifting)
* corner glow: G·((d − 2400)/580)² where d > 2400, d the distance from the camera
  boresight (DESIGN §4) in full-CCD pixels: x = c + 44, y = r;
  G is the glow at the CCD's far corner (d ≈ 2980) — strongest in cameras 1 and 2.
* scattered light (flagged 4096): A·(f + (1 − f)·s²), a ramp along direction θ with
  s = ½ + (u·cos θ + v·sin θ)/√2 ∈ 0..1 and floor f.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

FULL_SIZE = 2048
GLOW_R0 = 2400.0
GLOW_WIDTH = 580.0
SL_FLOOR = 0.3
N_SKY_COEF = 6

# Corner-glow amplitude (e-/s at the far corner) per camera and a per-CCD factor.
GLOW_CAMERA = {1: 2000.0, 2: 1200.0, 3: 250.0, 4: 100.0}
GLOW_CCD = {1: 1.0, 2: 0.85, 3: 1.1, 4: 0.95}


def glow_amplitude(camera: int, ccd: int) -> float:
    return GLOW_CAMERA[int(camera)] * GLOW_CCD[int(ccd)]


@njit(cache=True, nogil=True)
def background(size, coef, glow_amp, bx, by, glow_r0, glow_width,
               sl_amp, sl_angle, sl_floor, out):
    """Fill ``out`` (float64, S×S) with the noiseless background of one frame."""
    inv = 1.0 / (FULL_SIZE - 1)
    ca = math.cos(sl_angle) / math.sqrt(2.0)
    sa = math.sin(sl_angle) / math.sqrt(2.0)
    c0, c1, c2, c3, c4, c5 = coef[0], coef[1], coef[2], coef[3], coef[4], coef[5]
    for r in range(size):
        v = r * inv - 0.5
        dy = r - by
        base_r = c0 + c2 * v + c4 * v * v
        for c in range(size):
            u = c * inv - 0.5
            val = base_r + c1 * u + c3 * u * u + c5 * u * v
            dx = c + 44.0 - bx
            d = math.sqrt(dx * dx + dy * dy)
            if d > glow_r0:
                t = (d - glow_r0) / glow_width
                val += glow_amp * t * t
            if sl_amp != 0.0:
                s = 0.5 + u * ca + v * sa
                val += sl_amp * (sl_floor + (1.0 - sl_floor) * s * s)
            out[r, c] = val


def radius_map(size: int, camera: int, ccd: int) -> np.ndarray:
    """Distance (full-CCD pixels) of every science pixel of an S×S frame from the
    camera boresight."""
    from pipeline.simulate.geometry import boresight

    bx, by = boresight(camera, ccd)
    r = np.arange(size, dtype=float)
    return np.hypot(r[None, :] + 44.0 - bx, r[:, None] - by)
