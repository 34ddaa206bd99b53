"""Quality bits of a light curve.

A light curve's ``quality`` is the frame's TESS DQUALITY (bits 1..4096, DESIGN §4)
OR-ed with photometry bits placed above every bit TESS or lightkurve defines
(lightkurve's ``TessQualityFlags`` stops at 32768), so a SPOC-aware reader keeps its
meaning of the low bits:

* ``BACKGROUND_SHENANIGANS`` (65536): some pixel of the aperture carried the
  background "shenanigans" pixel flag (TASOC ``PixelQualityFlags`` bit 4) in that
  frame — the background there is not to be trusted.
* ``MISSING_PIXELS`` (131072): some pixels of the aperture were not finite in that
  frame; the flux is the sum over the others (NaN when none was left).

``pixel_quality`` (a separate array, TASOC's PIXEL_QUALITY) keeps the OR of the raw
pixel flags over the aperture (1 not used for background, 2 manual exclude, 4
shenanigans).

``DEFAULT_BITMASK`` selects the cadences left out of statistics and spectra: TESS's
default bad-cadence mask 4271 (1|2|4|8|32|64|128|4096) plus both photometry bits.
"""

from __future__ import annotations

import numpy as np

TESS_DEFAULT_BITMASK = 1 | 2 | 4 | 8 | 32 | 64 | 128 | 4096        # 4271
PIXEL_SHENANIGANS = 4                 # kernels.flags.SHENANIGANS
BACKGROUND_SHENANIGANS = 1 << 16
MISSING_PIXELS = 1 << 17
DEFAULT_BITMASK = TESS_DEFAULT_BITMASK | BACKGROUND_SHENANIGANS | MISSING_PIXELS

NAMES = {
    1: "attitude tweak", 2: "safe mode", 4: "coarse point", 8: "Earth point",
    16: "zero crossing", 32: "momentum dump", 64: "aperture cosmic", 128: "manual exclude",
    256: "sensitivity dropout", 512: "impulsive outlier", 1024: "collateral cosmic",
    2048: "Earth/Moon/planet in view", 4096: "scattered light",
    BACKGROUND_SHENANIGANS: "background shenanigans", MISSING_PIXELS: "missing pixels",
}


def lightcurve_quality(frame_quality, pixel_quality, n_bad) -> np.ndarray:
    """quality (int32) of each cadence from the frame quality (T,) and the aperture's
    OR-ed pixel flags and count of excluded pixels (..., T)."""
    q = np.asarray(frame_quality, dtype=np.int32) | np.zeros(np.shape(n_bad), np.int32)
    q |= np.where((np.asarray(pixel_quality) & PIXEL_SHENANIGANS) != 0, BACKGROUND_SHENANIGANS, 0).astype(np.int32)
    q |= np.where(np.asarray(n_bad) > 0, MISSING_PIXELS, 0).astype(np.int32)
    return q


def good_cadences(quality, flux, bitmask: int = DEFAULT_BITMASK) -> np.ndarray:
    """Cadences whose quality has none of ``bitmask`` and whose flux is finite."""
    return ((np.asarray(quality) & bitmask) == 0) & np.isfinite(flux)


def decode(value: int) -> list[str]:
    """Names of the bits set in one quality value."""
    return [name for bit, name in sorted(NAMES.items()) if int(value) & bit]
