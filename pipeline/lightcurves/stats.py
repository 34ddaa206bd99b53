"""Summary statistics of a light curve (TASOC conventions, Handberg et al. 2021).

All are computed on the good cadences (``quality.good_cadences``) of the light curve
normalised to parts per million, y = (flux / median(flux) − 1)·10⁶:

* ``median_flux`` (e-/s): median of the good fluxes.
* ``rms_hour_ppm``: robust rms on a 1-hour timescale — the light curve is binned into
  consecutive 1-hour bins from its first good cadence (each bin the mean of the
  points in it; empty bins dropped), and the rms of the binned series is taken as
  1.4826 × its median absolute deviation. This is TASOC's ``rms_timescale``. For
  white noise of per-cadence σ it estimates σ/√(points per hour) (with 30-min
  cadences, σ/√2).
* ``ptp_ppm``: robust point-to-point scatter, 1.4826 × median |y[i+1] − y[i]| over
  consecutive good cadences (TASOC's ``ptp``). For white noise this is √2·σ: it
  measures the scatter of differences, insensitive to slow variability.
* ``mean_flux``, ``std_ppm`` (plain standard deviation of y), ``n_good``.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.lightcurves.quality import DEFAULT_BITMASK, good_cadences

MAD_TO_SIGMA = 1.482602218505602
HOUR = 1.0 / 24.0


def normalized_ppm(flux) -> np.ndarray:
    flux = np.asarray(flux, dtype=float)
    return (flux / np.nanmedian(flux) - 1.0) * 1e6


def rms_timescale(time, y, timescale: float = HOUR) -> float:
    """Robust rms (MAD-scaled) of ``y`` binned to ``timescale`` days."""
    time = np.asarray(time, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(time) & np.isfinite(y)
    time, y = time[ok], y[ok]
    if len(y) < 2:
        return math.nan
    # (+1e-6 of a bin: regular cadences that fit a bin exactly stay together despite
    # rounding of their times)
    index = np.floor((time - time.min()) / timescale + 1e-6).astype(np.int64)
    counts = np.bincount(index)
    sums = np.bincount(index, weights=y)
    binned = sums[counts > 0] / counts[counts > 0]
    if len(binned) < 2:
        return math.nan
    return float(MAD_TO_SIGMA * np.median(np.abs(binned - np.median(binned))))


def ptp(y) -> float:
    """Robust point-to-point scatter of consecutive values of ``y``."""
    y = np.asarray(y, dtype=float)
    y = y[np.isfinite(y)]
    if len(y) < 3:
        return math.nan
    return float(MAD_TO_SIGMA * np.median(np.abs(np.diff(y))))


def summary(time, flux, quality, bitmask: int = DEFAULT_BITMASK) -> dict:
    """The light curve's summary statistics (see the module docstring)."""
    time = np.asarray(time, dtype=float)
    flux = np.asarray(flux, dtype=float)
    good = good_cadences(quality, flux, bitmask) & np.isfinite(time)
    out = {"n_cadences": int(len(flux)), "n_good": int(good.sum()), "median_flux": math.nan,
           "mean_flux": math.nan, "rms_hour_ppm": math.nan, "ptp_ppm": math.nan,
           "std_ppm": math.nan}
    if not good.any():
        return out
    f = flux[good]
    median = float(np.median(f))
    out["median_flux"] = median
    out["mean_flux"] = float(np.mean(f))
    if median > 0 and len(f) >= 2:
        y = (f / median - 1.0) * 1e6
        out["rms_hour_ppm"] = rms_timescale(time[good], y)
        out["ptp_ppm"] = ptp(y)
        out["std_ppm"] = float(np.std(y))
    return out
