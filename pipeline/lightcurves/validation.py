"""Light curves against a simulation's truth: the accuracy figures of issue #5.

    from pipeline.lightcurves.validation import compare_with_truth, summarise
    figures = compare_with_truth(truth, apertures, lightcurves)   # truth: load_truth(...)
    summarise(figures)   # {"precision_median": 1.03, "signal_recovered": 1.0, ...}

``compare_with_truth`` assigns each aperture the brightest star whose centre pixel it
holds and measures, per star, the figures the accuracy tests and ``make demo`` quote
(see its docstring for the exact definitions). ``lightcurves``: label → LightCurve.
"""

from __future__ import annotations

import json
import math

import numpy as np


def match_stars(truth, apertures) -> dict:
    """label → index of the brightest star whose centre pixel is in the aperture."""
    pos = np.stack([np.floor(np.asarray(truth.stars["row"]) + 0.5),
                    np.floor(np.asarray(truth.stars["col"]) + 0.5)], axis=1).astype(int)
    order = np.argsort(np.asarray(truth.stars["tmag"]))
    out = {}
    for ap in apertures:
        pix = set(zip(ap.rows.tolist(), ap.cols.tolist()))
        for k in order:
            if (pos[k, 0], pos[k, 1]) in pix:
                out[ap.label] = int(k)
                break
    return out


def isolated(truth, k: int, radius: float = 3.0) -> bool:
    """No brighter star within ``radius`` pixels of star k."""
    r, c, m = (np.asarray(truth.stars[x]) for x in ("row", "col", "tmag"))
    d = np.hypot(r - r[k], c - c[k])
    return not np.any((d <= radius) & (m < m[k]) & (np.arange(len(r)) != k))


def binned_theory(time, sigma, timescale=1.0 / 24.0) -> float:
    """Median over 1-hour bins (same bins as ``stats.rms_timescale``) of the noise of
    a bin mean, √Σσ²/n."""
    index = np.floor((time - time.min()) / timescale + 1e-6).astype(int)
    n = np.bincount(index)
    v = np.bincount(index, weights=sigma ** 2)
    return float(np.median(np.sqrt(v[n > 0]) / n[n > 0]))


def _amplitude(var_type, params) -> float:
    """Largest relative excursion of a variable star's signal."""
    p = json.loads(params) if params else {}
    if var_type in ("pulsator", "solarlike"):
        return float(sum(p.get("amp", [])))
    if var_type == "transit":
        return float(p.get("depth", 0.0))
    return 0.0


def compare_with_truth(truth, apertures, lightcurves, snr_min: float = 10.0, depth_snr_min: float = 30.0) -> dict:
    """The issue's accuracy figures of one run. ``lightcurves``: label → LightCurve.

    Each aperture is assigned the brightest star whose centre pixel it holds.
    * precision: non-variable stars, Tmag 8–13, no brighter star within 3 px, whose
      aperture holds no variable light above 0.3× the expected 1-h noise: ratio of the
      1-hour rms to the theoretical 1-hour noise of the aperture (shot noise of all
      light in it + read noise, per frame from the truth, binned like ``rms_timescale``).
    * flux: same stars: median(flux / true flux) vs the aperture's enclosed PRF
      fraction; ``flux_dev`` raw, ``flux_dev_corr`` after adding the light other
      stars put into the aperture (from the truth).
    * negative: labels of stars with Tmag ≤ 14 whose median flux is ≤ 0.
    * signal: pulsators; amplitude SNR = amplitude / (σ_cadence·√(π/N)); a frequency
      is recovered when a stored peak lies within 1/T of it. Per star: all its
      frequencies with SNR > ``snr_min`` recovered.
    * transits: measured depth 1 − median(full-depth)/median(out of transit) vs the
      true depth diluted by the other stars' light in the aperture, for transits with
      ≥ 3 good full-depth cadences and depth SNR ≥ ``depth_snr_min``.
    """
    texp, read_var = truth.texp, truth.read_var
    aps = {a.label: a for a in apertures}
    match = match_stars(truth, apertures)
    stars_img = truth.star_image(0)
    bkgs = np.stack([truth.background(i) for i in range(truth.n_frames)])
    F = np.asarray(truth.stars["flux"], float)
    R = np.asarray(truth.stars["row"], float)
    C = np.asarray(truth.stars["col"], float)
    amp = np.array([_amplitude(str(v), str(p)) for v, p in zip(truth.stars["var_type"], truth.stars["var_params"])])
    out = {"precision": [], "flux": [], "negative": [], "signal": [], "signal_stars": [], "transits": []}
    for label, lc in lightcurves.items():
        k = match.get(label)
        if k is None or label not in aps:
            continue
        ap = aps[label]
        rr, cc = ap.rows, ap.cols          # CCD = science coordinates (FFI cube, origin 0)
        tmag = float(truth.stars["tmag"][k])
        vt = str(truth.stars["var_type"][k])
        med = lc.meta.get("median_flux")
        if tmag <= 14 and not (med is not None and med > 0):
            out["negative"].append((label, tmag, med))
        good = lc.good()
        if good.sum() < 10 or not (med and med > 0):
            continue
        near = np.nonzero((np.abs(R - rr.mean()) < 30) & (np.abs(C - cc.mean()) < 30))[0]
        frac = {int(j): truth.prf_fraction(R[j], C[j], (rr, cc)) for j in near}
        light = {j: F[j] * f for j, f in frac.items()}
        contam = sum(v for j, v in light.items() if j != k)
        var_light = sum(v * amp[j] for j, v in light.items() if j != k)
        sig = np.sqrt((stars_img[rr, cc].sum() + bkgs[:, rr, cc].sum(axis=1)) / texp + len(rr) * read_var)
        t = lc.time
        cad_ppm = float(np.median(sig[good])) / med * 1e6
        if vt == "none" and 8.0 <= tmag <= 13.0 and isolated(truth, k):
            theo = binned_theory(t[good], sig[good]) / med * 1e6
            if var_light / med * 1e6 < 0.3 * theo:
                ratio = float(np.median(lc.flux[good] / truth.star_flux[good, k]))
                n_bins = len(np.unique(np.floor((t[good] - t[good].min()) * 24 + 1e-6)))
                out["precision"].append({"label": label, "tmag": tmag, "rms": lc.meta["rms_hour_ppm"],
                                         "theory": theo, "ratio": lc.meta["rms_hour_ppm"] / theo,
                                         "n_bins": n_bins})
                out["flux"].append({"label": label, "tmag": tmag, "frac": frac[k],
                                    "flux_dev": ratio / frac[k] - 1.0,
                                    "flux_dev_corr": (ratio - contam / F[k]) / frac[k] - 1.0})
        if vt == "pulsator":
            p = json.loads(str(truth.stars["var_params"][k]))
            span = (t[good][-1] - t[good][0]) * 86400.0
            peaks = [x["frequency_uhz"] for x in (lc.spectrum.peaks if lc.spectrum else [])]
            noise = cad_ppm * math.sqrt(math.pi / good.sum())
            dilution = light[k] / (light[k] + contam)
            rows = []
            for f, a in zip(p["freq_uhz"], p["amp"]):
                snr = a * 1e6 * dilution / noise
                hit = any(abs(f - x) <= 1e6 / span for x in peaks)
                rows.append({"label": label, "tmag": tmag, "freq": f, "amp_ppm": a * 1e6, "snr": snr, "recovered": hit})
            out["signal"].extend(rows)
            strong = [r for r in rows if r["snr"] > snr_min]
            if strong:
                out["signal_stars"].append({"label": label, "tmag": tmag, "n": len(strong),
                                            "recovered": all(r["recovered"] for r in strong)})
        if vt == "transit":
            p = json.loads(str(truth.stars["var_params"][k]))
            x = np.abs(np.mod(t - p["t0"] + 0.5 * p["period"], p["period"]) - 0.5 * p["period"])
            full = good & (x <= 0.5 * p["duration"] - p["ingress"] * p["duration"])
            outside = good & (x >= 0.5 * p["duration"] + 0.02)
            if full.sum() >= 3 and outside.sum() >= 10:
                expected = p["depth"] * light[k] / (light[k] + contam)
                depth = 1.0 - np.median(lc.flux[full]) / np.median(lc.flux[outside])
                snr = expected / (cad_ppm * 1e-6 / math.sqrt(full.sum()))
                if snr >= depth_snr_min:
                    out["transits"].append({"label": label, "tmag": tmag, "depth": p["depth"], "expected": expected,
                                            "measured": depth, "dev": depth / expected - 1.0, "snr": snr})
    return out


def summarise(fig: dict) -> dict:
    """Headline numbers of ``compare_with_truth``."""
    prec = np.array([p["ratio"] for p in fig["precision"]])
    fl = np.array([p["flux_dev"] for p in fig["flux"]])
    flc = np.array([p["flux_dev_corr"] for p in fig["flux"]])
    sig = fig["signal_stars"]
    tr = np.array([p["dev"] for p in fig["transits"]])
    return {
        "precision_n": len(prec),
        "precision_median": float(np.median(prec)) if len(prec) else math.nan,
        "precision_max": float(prec.max()) if len(prec) else math.nan,
        "precision_within_1.2": float(np.mean(prec <= 1.2)) if len(prec) else math.nan,
        "flux_n": len(fl),
        "flux_within_2pct": float(np.mean(np.abs(fl) <= 0.02)) if len(fl) else math.nan,
        "flux_within_2pct_corr": float(np.mean(np.abs(flc) <= 0.02)) if len(flc) else math.nan,
        "flux_max_dev_corr": float(np.max(np.abs(flc))) if len(flc) else math.nan,
        "negative": len(fig["negative"]),
        "signal_stars": len(sig),
        "signal_recovered": float(np.mean([s["recovered"] for s in sig])) if sig else math.nan,
        "signal_freqs": sum(r["snr"] > 10 for r in fig["signal"]),
        "signal_freqs_recovered": sum(r["snr"] > 10 and r["recovered"] for r in fig["signal"]),
        "transits_n": len(tr),
        "transits_within_10pct": float(np.mean(np.abs(tr) <= 0.1)) if len(tr) else math.nan,
        "transits_max_dev": float(np.max(np.abs(tr))) if len(tr) else math.nan,
    }
