"""The per-frame schedule: times, file names, quality flags, pointing jitter and the
background parameters of every cadence (the truth file's FRAMES table).

Everything a frame's pixels depend on, apart from the stars and the noise draws, is
a column here, so any frame can be rebuilt from the table alone.

* Times: tstart_i = T0(sector) + i·cadence, tstop = tstart + cadence, time = mid (BTJD);
  BARYCORR towards the CCD centre; names from the spacecraft time tstart − BARYCORR.
* Quality (DQUALITY): 32 for the cadence holding a momentum dump (every 2.5–4.5 d),
  4096 during scattered-light episodes, rare 1/4/512/1024; most cadences 0.
* Jitter (pixels): white 0.02 px rms per axis plus a slow 0.01–0.03 px wobble; dump
  cadences add 0.15 px, coarse-point cadences 0.3 px rms.
* Sky coefficients drift sinusoidally (periods 4–20 d, 5–20 %); the corner glow
  follows the 13.7-d orbit (±15 %).
* Scattered light: episodes in the last ~0.5–1.5 d of each orbit for long runs, one
  random episode (≥ 2 cadences) for runs shorter than 5 d; amplitude
  A·(0.3 + 0.7·sin(π·phase)) within the episode, A 80–600 e-/s.
"""

from __future__ import annotations

import math

import numpy as np
from astropy.table import Table

from pipeline.simulate import geometry, sky

Q_ATTITUDE_TWEAK = 1
Q_COARSE_POINT = 4
Q_MOMENTUM_DUMP = 32
Q_IMPULSIVE_OUTLIER = 512
Q_COLLATERAL_COSMIC = 1024
Q_SCATTERED_LIGHT = 4096


def cadence_numbers(tstart, cadence):
    """FFIINDEX-like cadence counter since the start of the mission (monotonic)."""
    return 4700 + np.round((np.asarray(tstart) - geometry.SECTOR1_START) * 86400.0 / cadence).astype(np.int64)


def _episodes(rng, t0, n, cad):
    span = n * cad
    out = []
    if n < 2:
        return out
    if span >= 5.0:
        k = 1
        while t0 + (k - 1) * geometry.ORBIT_PERIOD < t0 + span:
            end = t0 + k * geometry.ORBIT_PERIOD - rng.uniform(0.0, 0.2)
            out.append((end - rng.uniform(0.5, 1.5), end))
            k += 1
    else:
        dur = min(max(rng.uniform(0.1, 0.2) * span, 2.0 * cad), 1.5)
        start = t0 + rng.uniform(0.0, max(span - dur, 0.0))
        out.append((start, start + dur))
    return [(a, b, rng.uniform(80.0, 600.0), rng.uniform(0.0, 2 * math.pi)) for a, b in out]


def make_frames(config, rng) -> Table:
    n = int(config.n_frames)
    cad = config.cadence / 86400.0
    t0 = geometry.sector_start(config.sector)
    idx = np.arange(n)
    tstart = t0 + idx * cad
    tstop = tstart + cad
    time = 0.5 * (tstart + tstop)
    ra, dec = geometry.ccd_center_radec(config.sector, config.camera, config.ccd)
    bary = geometry.barycorr(time, ra, dec)
    files = [geometry.ffi_name(geometry.name_timestamp(a - b), config.sector, config.camera, config.ccd)
             for a, b in zip(tstart, bary)]
    if len(set(files)) != n:
        raise ValueError("cadence too short: file names (1-s timestamps) collide")

    # quality flags
    quality = np.zeros(n, dtype=np.int32)
    dump_period = rng.uniform(2.5, 4.5)
    dumps = t0 + rng.uniform(0.0, dump_period) + dump_period * np.arange(int(n * cad / dump_period) + 2)
    dump_idx = np.floor((dumps - t0) / cad).astype(int)
    quality[dump_idx[(dump_idx >= 0) & (dump_idx < n)]] |= Q_MOMENTUM_DUMP
    for bit, p in ((Q_ATTITUDE_TWEAK, 0.001), (Q_COARSE_POINT, 0.002),
                   (Q_IMPULSIVE_OUTLIER, 0.002), (Q_COLLATERAL_COSMIC, 0.01)):
        quality[rng.random(n) < p] |= bit

    # pointing jitter
    jit = rng.normal(0.0, 0.02, (2, n))
    for a in range(2):
        amp, per, ph = rng.uniform(0.01, 0.03), rng.uniform(0.5, 3.0), rng.uniform(0, 2 * math.pi)
        jit[a] += amp * np.sin(2 * math.pi * (time - t0) / per + ph)
    jit += (quality & Q_MOMENTUM_DUMP > 0) * rng.normal(0.0, 0.15, (2, n))
    jit += (quality & Q_COARSE_POINT > 0) * rng.normal(0.0, 0.3, (2, n))

    # smooth sky: base level 80–200 e-/s, gradients and curvature, slow drifts
    level = rng.uniform(80.0, 200.0)
    base = level * np.concatenate([[1.0], rng.uniform(-0.3, 0.3, 2), rng.uniform(-0.15, 0.15, 3)])
    mod = rng.uniform(0.05, 0.2, sky.N_SKY_COEF)
    per = rng.uniform(4.0, 20.0, sky.N_SKY_COEF)
    ph = rng.uniform(0.0, 2 * math.pi, sky.N_SKY_COEF)
    coef = base[None, :] * (1.0 + mod[None, :] * np.sin(2 * math.pi * (time[:, None] - t0) / per[None, :]
                                                          + ph[None, :]))
    # corner glow along the orbit
    glow = config.glow_amp * (1.0 + 0.15 * np.sin(2 * math.pi * (time - t0) / geometry.ORBIT_PERIOD
                                                    + rng.uniform(0, 2 * math.pi)))
    # scattered light
    sl_amp = np.zeros(n)
    sl_angle = np.zeros(n)
    for a, b, amp, ang in _episodes(rng, t0, n, cad):
        inside = (time >= a) & (time <= b)
        sl_amp[inside] = amp * (0.3 + 0.7 * np.sin(math.pi * (time[inside] - a) / (b - a)))
        sl_angle[inside] = ang
    quality[sl_amp > 0] |= Q_SCATTERED_LIGHT

    return Table({
        "index": idx.astype(np.int32), "file": files, "time": time, "tstart": tstart, "tstop": tstop,
        "cadenceno": cadence_numbers(tstart, config.cadence), "quality": quality,
        "barycorr": bary, "date_obs": [geometry.iso_utc(t) for t in tstart],
        "date_end": [geometry.iso_utc(t) for t in tstop],
        "jitter_row": jit[0], "jitter_col": jit[1], "sky_coef": coef, "glow_amp": glow,
        "sl_amp": sl_amp, "sl_angle": sl_angle,
    })
