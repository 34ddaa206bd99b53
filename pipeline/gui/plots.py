"""Plotly figures of the GUI: images with a percentile stretch and aperture contours,
light curves, power spectra. Pure functions of numpy arrays and API documents, so
they are testable without Streamlit."""

from __future__ import annotations

import math
import warnings

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

MAX_DISPLAY = 512      # pixels per axis sent to the browser; larger images are binned


def stretch_limits(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """Colour-scale limits at the ``low``/``high`` percentiles of the finite pixels."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [low, high])
    if not hi > lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def bin_factor(shape: tuple[int, ...], max_display: int = MAX_DISPLAY) -> int:
    return max(1, math.ceil(max(shape) / max_display))


def bin_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor``×``factor`` blocks (NaNs ignored); edges padded with NaN."""
    if factor <= 1:
        return image.astype(np.float32, copy=False)
    h, w = image.shape
    hp, wp = -(-h // factor) * factor, -(-w // factor) * factor
    padded = np.full((hp, wp), np.nan, np.float32)
    padded[:h, :w] = image
    blocks = padded.reshape(hp // factor, factor, wp // factor, factor)
    with warnings.catch_warnings():
        # an all-NaN block is NaN by design: no "Mean of empty slice" warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(blocks, axis=(1, 3))


def aperture_mask(apertures: list[dict], shape: tuple[int, int], origin=(0, 0)) -> np.ndarray:
    """A label image: pixel → 1-based index into ``apertures`` (0 = none). Aperture
    pixels are CCD [row, col]; the image's pixel (0, 0) is at ``origin``."""
    mask = np.zeros(shape, np.int32)
    row0, col0 = (int(v) for v in (origin or (0, 0)))
    for i, ap in enumerate(apertures, start=1):
        pixels = np.asarray(ap.get("pixels") or [], dtype=np.int64).reshape(-1, 2)
        rows, cols = pixels[:, 0] - row0, pixels[:, 1] - col0
        inside = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
        mask[rows[inside], cols[inside]] = i
    return mask


def image_figure(image: np.ndarray, title: str, *, mask: np.ndarray | None = None,
                 percentiles=(1.0, 99.0), colorscale: str = "Viridis", origin=(0, 0),
                 max_display: int = MAX_DISPLAY, colorbar_title: str = "e⁻/s") -> go.Figure:
    """A heatmap of ``image`` stretched to the given percentiles, with a colour bar,
    in CCD pixel coordinates; ``mask`` (a label image) drawn as contour lines."""
    factor = bin_factor(image.shape, max_display)
    shown = bin_image(np.asarray(image, dtype=np.float32), factor)
    lo, hi = stretch_limits(shown, *percentiles)
    row0, col0 = (int(v) for v in (origin or (0, 0)))
    rows = row0 + np.arange(shown.shape[0]) * factor + (factor - 1) / 2
    cols = col0 + np.arange(shown.shape[1]) * factor + (factor - 1) / 2
    fig = go.Figure(go.Heatmap(z=shown, x=cols, y=rows, zmin=lo, zmax=hi, colorscale=colorscale,
                               colorbar={"title": {"text": colorbar_title}}, name="image",
                               hovertemplate="row %{y}<br>col %{x}<br>%{z:.1f}<extra></extra>"))
    if mask is not None and mask.any():
        outline = bin_image((mask > 0).astype(np.float32), factor)
        fig.add_trace(go.Contour(z=outline, x=cols, y=rows, name="apertures", showscale=False,
                                 contours={"start": 0.5, "end": 0.5, "size": 1, "coloring": "none"},
                                 line={"color": "red", "width": 1}, hoverinfo="skip"))
    subtitle = f" (binned {factor}×{factor})" if factor > 1 else ""
    fig.update_layout(title={"text": title + subtitle}, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      height=420)
    fig.update_xaxes(title_text="column", constrain="domain")
    fig.update_yaxes(title_text="row", scaleanchor="x", scaleratio=1, constrain="domain")
    return fig


def _column(values, dtype=float) -> np.ndarray:
    """An API list with nulls (NaN on the server) as a float array."""
    return np.array([np.nan if v is None else v for v in (values or [])], dtype=dtype)


def lightcurve_figure(lc: dict) -> go.Figure:
    """Flux and background against time, sharing the (zoomable) time axis; points
    with a non-zero quality flag drawn as red crosses."""
    time = _column(lc.get("time"))
    flux = _column(lc.get("flux"))
    bkg = _column(lc.get("flux_bkg"))
    quality = np.array([q or 0 for q in lc.get("quality") or []], dtype=np.int64)
    if quality.size != time.size:
        quality = np.zeros(time.size, np.int64)
    flagged = quality != 0
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        row_heights=[0.65, 0.35], subplot_titles=("flux", "background"))
    good = ~flagged
    fig.add_trace(go.Scattergl(x=time[good], y=flux[good], mode="markers+lines", name="flux",
                               marker={"size": 4}, line={"width": 1}), row=1, col=1)
    fig.add_trace(go.Scattergl(x=time[flagged], y=flux[flagged], mode="markers",
                               name=f"quality-flagged ({int(flagged.sum())})",
                               marker={"symbol": "x", "size": 7, "color": "red"},
                               customdata=quality[flagged],
                               hovertemplate="t=%{x}<br>flux=%{y}<br>quality=%{customdata}"),
                  row=1, col=1)
    fig.add_trace(go.Scattergl(x=time, y=bkg, mode="lines", name="background",
                               line={"width": 1, "color": "gray"}), row=2, col=1)
    fig.update_xaxes(title_text="time (BTJD)", row=2, col=1)
    fig.update_yaxes(title_text="e⁻/s", row=1, col=1)
    fig.update_yaxes(title_text="e⁻/s", row=2, col=1)
    fig.update_layout(height=520, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.15})
    return fig


def spectrum_figure(spectrum: dict, n_peaks: int = 5) -> go.Figure:
    """Amplitude spectrum with the strongest peaks marked and labelled."""
    freq = _column(spectrum.get("frequency_uhz"))
    amp = _column(spectrum.get("amplitude_ppm"))
    peaks = strongest_peaks(spectrum, n_peaks)
    fig = go.Figure(go.Scatter(x=freq, y=amp, mode="lines", name="amplitude", line={"width": 1}))
    if peaks:
        fig.add_trace(go.Scatter(x=[p["frequency_uhz"] for p in peaks],
                                 y=[p["amplitude_ppm"] for p in peaks], mode="markers+text",
                                 name="strongest", marker={"color": "red", "size": 8},
                                 text=[f"{p['frequency_uhz']:.2f}" for p in peaks],
                                 textposition="top center"))
    fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      xaxis_title="frequency (µHz)", yaxis_title="amplitude (ppm)")
    return fig


def strongest_peaks(spectrum: dict, n: int = 5) -> list[dict]:
    peaks = [p for p in spectrum.get("peaks") or [] if p.get("amplitude_ppm") is not None]
    return sorted(peaks, key=lambda p: -p["amplitude_ppm"])[:n]


def cutout_bounds(pixels, shape, origin=(0, 0), margin: int = 8) -> tuple[slice, slice]:
    """Image slices (in the image's own coordinates) around an aperture's pixels."""
    pix = np.asarray(pixels or [], dtype=np.int64).reshape(-1, 2)
    row0, col0 = (int(v) for v in (origin or (0, 0)))
    if pix.size == 0:
        return slice(0, shape[0]), slice(0, shape[1])
    r = pix[:, 0] - row0
    c = pix[:, 1] - col0
    return (slice(max(0, r.min() - margin), min(shape[0], r.max() + margin + 1)),
            slice(max(0, c.min() - margin), min(shape[1], c.max() + margin + 1)))
