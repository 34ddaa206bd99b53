"""Injected variability: relative flux change signal(t) of a star, with flux(t) =
flux · (1 + signal(t)) evaluated at each frame's mid time (BTJD).

Types and their JSON parameters (floats rounded to 12 significant digits before use,
so the JSON reproduces the signal exactly):

* ``pulsator``  — coherent sinusoids: Σ amp_k·sin(2π·freq_k·(t − tref) + phase_k);
  {"tref" [BTJD], "freq_uhz" [...], "amp" [...] (fractional), "phase" [...] (rad)}.
  1–3 frequencies between 0.1 c/d and 0.8× Nyquist, amplitudes 0.1–5 %.
* ``solarlike`` — a comb of l = 0, 1, 2 modes, ν = Δν(n + ε) (l=1 shifted by
  Δν/2 − 0.025Δν, l=2 by −0.12Δν) under a Gaussian envelope at νmax, red-giant
  scaling Δν = 0.263 νmax^0.772 and A_max ≈ 2.1 ppm·(3090/νmax)^0.8 (tens to
  hundreds of ppm: only bright stars show them); same sum-of-sines form as a
  pulsator plus {"numax_uhz", "dnu_uhz", "amax"}. All modes below 0.95× Nyquist.
* ``transit``   — trapezoid: depth, total duration (days), ingress (and egress)
  as a fraction of the duration; {"period" [d], "t0" [BTJD], "depth",
  "duration" [d], "ingress"}.
* ``none``      — constant, "{}".
"""

from __future__ import annotations

import json
import math

import numpy as np

VAR_TYPES = ("none", "pulsator", "solarlike", "transit")
TYPE_WEIGHTS = {"pulsator": 0.5, "solarlike": 0.2, "transit": 0.3}
UHZ_TO_CPD = 86400e-6      # µHz → cycles per day


def _r(x):
    """Round to 12 significant digits (exact through JSON)."""
    if isinstance(x, (list, tuple, np.ndarray)):
        return [_r(v) for v in x]
    return float(f"{float(x):.12g}")


def nyquist_uhz(cadence: float) -> float:
    return 1e6 / (2.0 * cadence)


def draw_pulsator(rng, cadence, tref):
    n = int(rng.integers(1, 4))
    nyq_cpd = nyquist_uhz(cadence) * UHZ_TO_CPD
    f_cpd = np.exp(rng.uniform(math.log(0.1), math.log(0.8 * nyq_cpd), n))
    amp = np.exp(rng.uniform(math.log(1e-3), math.log(5e-2), n))
    phase = rng.uniform(0.0, 2 * math.pi, n)
    return {"tref": _r(tref), "freq_uhz": _r(f_cpd / UHZ_TO_CPD), "amp": _r(amp), "phase": _r(phase)}


def draw_solarlike(rng, cadence, tref):
    nyq = nyquist_uhz(cadence)
    numax = math.exp(rng.uniform(math.log(8.0), math.log(min(250.0, 0.6 * nyq))))
    dnu = 0.263 * numax ** 0.772
    eps = 0.634 + 0.63 * math.log10(dnu)
    sigma_env = 0.66 * numax ** 0.88 / 2.3548
    amax = 2.1e-6 * (3090.0 / numax) ** 0.8 * rng.uniform(0.7, 1.3)
    n_c = int(round(numax / dnu - eps))
    freqs, amps = [], []
    for n in range(n_c - 4, n_c + 5):
        for shift, vis in ((0.0, 1.0), (0.5 - 0.025, 1.5), (-0.12, 0.6)):
            nu = dnu * (n + eps + shift)
            a = amax * math.sqrt(vis) * math.exp(-0.5 * ((nu - numax) / sigma_env) ** 2)
            if 0.0 < nu < 0.95 * nyq and a > 0.02 * amax:
                freqs.append(nu)
                amps.append(a)
    phase = rng.uniform(0.0, 2 * math.pi, len(freqs))
    return {"tref": _r(tref), "numax_uhz": _r(numax), "dnu_uhz": _r(dnu), "amax": _r(amax),
            "freq_uhz": _r(freqs), "amp": _r(amps), "phase": _r(phase)}


def draw_transit(rng, cadence, tref):
    period = math.exp(rng.uniform(math.log(0.5), math.log(15.0)))
    duration = min(0.1 * period ** (1.0 / 3.0) * rng.uniform(0.7, 1.3), 0.2 * period)
    return {"period": _r(period), "t0": _r(tref + rng.uniform(0.0, period)),
            "depth": _r(rng.uniform(0.005, 0.03)), "duration": _r(duration),
            "ingress": _r(rng.uniform(0.1, 0.25))}


DRAW = {"pulsator": draw_pulsator, "solarlike": draw_solarlike, "transit": draw_transit}


def draw(rng, var_type, cadence, tref):
    """Random parameters of one variable star (a JSON-able dict)."""
    return DRAW[var_type](rng, cadence, tref)


def _sines(p, t):
    dt = (t - p.get("tref", 0.0)) * UHZ_TO_CPD
    out = np.zeros_like(t)
    for f, a, ph in zip(p["freq_uhz"], p["amp"], p["phase"]):
        out += a * np.sin(2.0 * math.pi * f * dt + ph)
    return out


def _transit(p, t):
    period, dur, depth = p["period"], p["duration"], p["depth"]
    x = np.abs(np.mod(t - p["t0"] + 0.5 * period, period) - 0.5 * period)
    half = 0.5 * dur
    ing = p["ingress"] * dur
    out = np.where(x <= half - ing, -depth, -depth * (half - x) / ing)
    return np.where(x >= half, 0.0, out)


def signal(var_type: str, params, t) -> np.ndarray:
    """Relative flux change of a star at BTJD times ``t`` (params: dict or JSON)."""
    t = np.asarray(t, dtype=float)
    if isinstance(params, str):
        params = json.loads(params) if params else {}
    if var_type in ("pulsator", "solarlike"):
        return _sines(params, t)
    if var_type == "transit":
        return _transit(params, t)
    if var_type in ("none", ""):
        return np.zeros_like(t)
    raise ValueError(f"unknown variability type {var_type!r}")


def star_flux(flux, var_types, var_params, times) -> np.ndarray:
    """Noiseless flux (n_frames, n_stars) in e-/s: flux · (1 + signal(time))."""
    times = np.asarray(times, dtype=float)
    flux = np.asarray(flux, dtype=float)
    out = np.repeat(flux[None, :], len(times), axis=0)
    for k, (vt, vp) in enumerate(zip(var_types, var_params)):
        vt = str(vt).strip()
        if vt not in ("none", ""):
            out[:, k] = flux[k] * (1.0 + signal(vt, vp, times))
    return out
