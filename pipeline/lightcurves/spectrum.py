"""The asteroseismic signal: Lomb–Scargle amplitude spectrum and power density of a
light curve, and its strongest frequencies.

Input: the good cadences (``quality.good_cadences``) of the light curve normalised to
ppm, y = (flux / median − 1)·10⁶, at times t (seconds from the first good cadence).
Convention (as lightkurve's ``LombScarglePeriodogram`` and KASOC): astropy's
``LombScargle(t, y, fit_mean=False, center_data=True, normalization="psd")`` gives
P(ν) in ppm²; N good cadences spanning T seconds:

* amplitude  A(ν) = √(4 P / N)                 [ppm]     — a sinusoid of amplitude a
  shows a peak of height a;
* power density  PSD(ν) = 2 P T / N · 10⁻⁶     [ppm²/µHz] — single-sided, calibrated
  so that its integral from 0 to the Nyquist frequency is the variance (Parseval);
  for white noise of rms σ its mean level is 2σ²T/N·10⁻⁶.

Frequency grid: ν_k = k·δν for k = 1.. up to the Nyquist frequency 1/(2·median Δt),
δν = 1/(oversample·T) (oversample 5 by default), in µHz.

Strongest frequencies: iterative prewhitening. Each round takes the highest peak of
the residual amplitude spectrum at least ``min_separation`` (default 1/T, the
resolution) away from the frequencies already found, refines it by a parabola through
the three grid points around it, fits all frequencies found so far at once (linear
least squares: a·sin + b·cos per frequency plus a constant) to the light curve, and
continues on the residuals. It stops after ``n_peaks`` frequencies or when the next
peak is below ``snr_stop`` (4, the usual criterion) times the noise, the noise being
the mean amplitude level of the residual spectrum (1.0645 × its median, exact for
white noise, robust to the peaks). Each peak reports the fitted amplitude (ppm),
phase φ of a·sin(2πν(t − tref) + φ) with tref the first good time (BTJD), and
SNR = amplitude / final noise. Prewhitening (rather than picking local maxima) is
what keeps spectral-window sidelobes of a strong mode from hiding weaker modes.

Outliers: before the spectrum, points deviating from a 5-point running median by more
than ``clip`` (6) robust standard deviations (1.4826 × MAD of the point-to-point
differences / √2) are
left out — a single bad frame (e.g. a background estimate off by 30 e-/s per pixel)
otherwise spreads its power over every frequency. A sinusoid never trips it (its
deviations scale the MAD with it); a deep transit's edges may, which a spectrum for
asteroseismology can afford. The stored light curve is not touched; ``n_clipped`` says
how many points the spectrum left out. ``clip=None`` turns it off.

Storage: the stored spectrum has at most ``max_points`` points. A longer one is binned
by ``bin`` consecutive grid points: frequency and power density are bin means
(the mean keeps the density calibrated), amplitude is the bin maximum (peaks stay
visible). The peaks always come from the full-resolution spectrum.
"""

from __future__ import annotations

import math

import numpy as np

NOISE_FROM_MEDIAN = math.sqrt(math.pi / 2.0) / math.sqrt(2.0 * math.log(2.0))  # 1.0645
CLIP_WINDOW = 5             # points of the running median the outlier clip compares with


def frequency_grid(t_seconds, oversample: float = 5.0, max_frequency_uhz: float | None = None):
    """(frequencies in Hz, T, nyquist in Hz) for times in seconds."""
    t = np.asarray(t_seconds, dtype=float)
    span = float(t[-1] - t[0])
    dt = float(np.median(np.diff(t)))
    nyquist = 0.5 / dt
    df = 1.0 / (oversample * span)
    top = nyquist if max_frequency_uhz is None else min(nyquist, max_frequency_uhz * 1e-6)
    n = int(math.floor(top / df + 1e-9))
    return df * np.arange(1, n + 1), span, nyquist


def power_spectrum(t_seconds, y, freq_hz):
    """(amplitude ppm, power density ppm²/µHz) of y (ppm) at ``freq_hz``."""
    from astropy.timeseries import LombScargle

    t = np.asarray(t_seconds, dtype=float)
    n = len(t)
    span = float(t[-1] - t[0])
    ls = LombScargle(t, y, fit_mean=False, center_data=True, normalization="psd")
    power = ls.power(freq_hz, method="fast", assume_regular_frequency=True)
    power = np.maximum(np.asarray(power, dtype=float), 0.0)
    return np.sqrt(4.0 * power / n), power * 2.0 * span / n * 1e-6


def _fit(t, y, freqs):
    """Least-squares amplitudes and phases of sinusoids at fixed ``freqs`` (Hz)."""
    cols = [np.ones_like(t)]
    for f in freqs:
        w = 2.0 * math.pi * f * t
        cols += [np.sin(w), np.cos(w)]
    design = np.stack(cols, axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    model = design @ coef
    a, b = coef[1::2], coef[2::2]
    return np.hypot(a, b), np.arctan2(b, a), model


def _refine(freq, amp, j):
    """Parabolic interpolation of amp² around grid index j."""
    if 0 < j < len(freq) - 1:
        y0, y1, y2 = amp[j - 1] ** 2, amp[j] ** 2, amp[j + 1] ** 2
        denom = y0 - 2.0 * y1 + y2
        if denom < 0:
            shift = 0.5 * (y0 - y2) / denom
            if abs(shift) <= 1.0:
                return freq[j] + shift * (freq[1] - freq[0])
    return freq[j]


def prewhiten(t, y, freq_hz, amplitude, n_peaks=10, snr_stop=4.0, min_separation=None):
    """Strongest frequencies by iterative prewhitening; returns (peaks, noise ppm)."""
    span = float(t[-1] - t[0])
    min_sep = (1.0 / span) if min_separation is None else float(min_separation)
    found: list[float] = []
    amp = amplitude
    fitted = (np.array([]), np.array([]))
    noise = float(NOISE_FROM_MEDIAN * np.median(amp)) if len(amp) else math.nan
    while len(found) < n_peaks:
        allowed = np.ones(len(freq_hz), dtype=bool)
        for f in found:
            allowed &= np.abs(freq_hz - f) >= min_sep
        if not allowed.any():
            break
        j = int(np.argmax(np.where(allowed, amp, -1.0)))
        if not noise > 0 or amp[j] < snr_stop * noise:
            break
        found.append(float(_refine(freq_hz, amp, j)))
        amps, phases, model = _fit(t, y, found)
        fitted = (amps, phases)
        amp, _ = power_spectrum(t, y - model, freq_hz)
        noise = float(NOISE_FROM_MEDIAN * np.median(amp))
    peaks = [{"frequency_uhz": f * 1e6, "amplitude_ppm": float(a), "phase": float(p),
              "snr": float(a / noise) if noise > 0 else math.nan}
             for f, a, p in zip(found, *fitted)]
    peaks.sort(key=lambda p: -p["amplitude_ppm"])
    return peaks, noise


def clip_outliers(y, clip: float | None = 6.0, window: int = CLIP_WINDOW) -> np.ndarray:
    """Mask of the points kept (see "Outliers" in the module docstring)."""
    keep = np.ones(len(y), dtype=bool)
    if clip is None or len(y) < 3 * window:
        return keep
    from scipy.ndimage import median_filter

    r = y - median_filter(y, size=window, mode="nearest")
    r = r - np.median(r)
    # the scale from point-to-point differences: on a smooth, high-SNR light curve
    # most points ARE their running median (r = 0), so the MAD of r is 0 and would
    # clip nothing — not even a 30 % jump
    d = np.diff(y)
    sigma = 1.482602218505602 * np.median(np.abs(d - np.median(d))) / math.sqrt(2.0)
    if not sigma > 0:
        sigma = 1.482602218505602 * np.median(np.abs(r))
    if sigma > 0:
        keep = np.abs(r) <= clip * sigma
    return keep


def analyse(time_btjd, y_ppm, oversample=5.0, max_points=5000, n_peaks=10, snr_stop=4.0,
            min_separation=None, max_frequency_uhz=None, clip: float | None = 6.0) -> dict | None:
    """The spectrum summary stored with a light curve (see the module docstring), or
    None when there are too few good points (< 10) or no time span.
    ``min_separation`` in µHz (default 1/T)."""
    time_btjd = np.asarray(time_btjd, dtype=float)
    y = np.asarray(y_ppm, dtype=float)
    ok = np.isfinite(time_btjd) & np.isfinite(y)
    time_btjd, y = time_btjd[ok], y[ok]
    if len(y) < 10:
        return None
    order = np.argsort(time_btjd)
    time_btjd, y = time_btjd[order], y[order]
    keep = clip_outliers(y, clip)
    n_clipped = int((~keep).sum())
    time_btjd, y = time_btjd[keep], y[keep]
    tref = float(time_btjd[0])
    t = (time_btjd - tref) * 86400.0
    if t[-1] <= 0:
        return None
    freq, span, nyquist = frequency_grid(t, oversample, max_frequency_uhz)
    if len(freq) < 3:
        return None
    y = y - np.mean(y)
    amplitude, psd = power_spectrum(t, y, freq)
    peaks, noise = prewhiten(t, y, freq, amplitude, n_peaks, snr_stop,
                             None if min_separation is None else min_separation * 1e-6)
    k = max(1, int(math.ceil(len(freq) / max_points)))
    m = (len(freq) // k) * k
    if k > 1:
        f_s = freq[:m].reshape(-1, k).mean(axis=1)
        a_s = amplitude[:m].reshape(-1, k).max(axis=1)
        p_s = psd[:m].reshape(-1, k).mean(axis=1)
    else:
        f_s, a_s, p_s = freq, amplitude, psd
    return {
        "frequency_uhz": (f_s * 1e6).astype(np.float32),
        "amplitude_ppm": a_s.astype(np.float32),
        "psd_ppm2_uhz": p_s.astype(np.float32),
        "bin": k, "n_points": int(len(freq)), "oversample": float(oversample),
        "nyquist_uhz": nyquist * 1e6, "resolution_uhz": 1e6 / span,
        "n_used": int(len(y)), "n_clipped": n_clipped, "tref": tref, "noise_ppm": noise,
        "mean_psd_ppm2_uhz": float(np.mean(psd)),
        "peaks": peaks,
    }
