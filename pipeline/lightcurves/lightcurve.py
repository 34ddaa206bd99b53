"""Reading light curves back: ``load_lightcurve`` → ``LightCurve`` (a lightkurve-like
object) and ``find_lightcurves`` → summaries without the arrays.

    lc = load_lightcurve(catalog, 14, 2, 3, label=17)
    lc                       # <LightCurve s0014 2-3 #17: 1196 cadences ...>
    lc.time, lc.flux, lc.flux_err, lc.quality       # numpy arrays, time in BTJD
    lc.remove_bad().normalize("ppm").plot()
    lc.spectrum.peaks        # the stored spectrum's strongest frequencies
    lc.periodogram()         # a fresh full-resolution spectrum
    lc.to_lightkurve()       # a lightkurve.LightCurve (when lightkurve is installed)
"""

from __future__ import annotations

import math

import numpy as np

from pipeline.lightcurves import spectrum as spectrum_mod
from pipeline.lightcurves.documents import SERIES, SPECTRUM_ARRAYS, decode_array, is_encoded
from pipeline.lightcurves.quality import DEFAULT_BITMASK, good_cadences

_SERIES_FIELDS = tuple(SERIES)
_SUMMARY_EXCLUDE = {name: 0 for name in _SERIES_FIELDS + ("spectrum", "aperture", "_id")}


class Spectrum:
    """A light curve's amplitude spectrum and power density vs frequency.

    ``frequency`` (µHz), ``amplitude`` (ppm), ``psd`` (ppm²/µHz), ``peaks`` (list of
    {frequency_uhz, amplitude_ppm, phase, snr}), ``nyquist``, ``resolution`` (1/T,
    µHz), ``noise`` (mean amplitude noise, ppm), ``bin`` (grid points per stored point).
    """

    def __init__(self, frequency, amplitude, psd, peaks=(), nyquist=math.nan, resolution=math.nan,
                 noise=math.nan, bin=1, meta=None):
        self.frequency = np.asarray(frequency, dtype=float)
        self.amplitude = np.asarray(amplitude, dtype=float)
        self.psd = np.asarray(psd, dtype=float)
        self.peaks = list(peaks)
        self.nyquist = nyquist
        self.resolution = resolution
        self.noise = noise
        self.bin = bin
        self.meta = dict(meta or {})

    @classmethod
    def from_dict(cls, d: dict) -> "Spectrum":
        arr = {k: decode_array(d[k]) if is_encoded(d[k]) else np.asarray(d[k]) for k in SPECTRUM_ARRAYS}
        meta = {k: v for k, v in d.items() if k not in SPECTRUM_ARRAYS}
        return cls(arr["frequency_uhz"], arr["amplitude_ppm"], arr["psd_ppm2_uhz"], d.get("peaks", []),
                   d.get("nyquist_uhz", math.nan), d.get("resolution_uhz", math.nan),
                   d.get("noise_ppm", math.nan), d.get("bin", 1), meta)

    def __len__(self) -> int:
        return len(self.frequency)

    def __repr__(self) -> str:
        top = ", ".join(f"{p['frequency_uhz']:.3f} µHz ({p['amplitude_ppm']:.0f} ppm, S/N {p['snr']:.1f})"
                        for p in self.peaks[:3])
        return (f"<Spectrum {len(self)} points to {self.nyquist:.1f} µHz, resolution "
                f"{self.resolution:.3f} µHz, noise {self.noise:.1f} ppm"
                + (f"; peaks: {top}" if top else "; no significant peak") + ">")

    def plot(self, ax=None, kind: str = "amplitude", **kwargs):
        """Amplitude (ppm) or power density (ppm²/µHz, log-log) vs frequency."""
        import matplotlib.pyplot as plt

        ax = ax or plt.subplots(figsize=(8, 3.5))[1]
        if kind == "psd":
            ax.loglog(self.frequency, self.psd, lw=0.6, **kwargs)
            ax.set_ylabel("power density [ppm²/µHz]")
        else:
            ax.plot(self.frequency, self.amplitude, lw=0.6, **kwargs)
            for p in self.peaks:
                ax.axvline(p["frequency_uhz"], color="C3", lw=0.5, alpha=0.5)
            ax.set_ylabel("amplitude [ppm]")
        ax.set_xlabel("frequency [µHz]")
        return ax


class LightCurve:
    """One aperture's light curve: numpy arrays of equal length in time order.

    ``time`` (BTJD), ``flux``, ``flux_err``, ``flux_bkg`` (e-/s, or relative after
    ``normalize``), ``quality``, ``cadenceno``, ``centroid_row``/``centroid_col`` (CCD
    science coordinates), ``pixel_quality``, ``n_bad_pixels``; ``meta`` the document's
    other fields (sector, camera, ccd, label, ra, dec, median_flux, rms_hour_ppm...).
    """

    def __init__(self, time, flux, flux_err=None, quality=None, meta=None, spectrum=None, unit="e-/s",
                 **columns):
        self.time = np.asarray(time, dtype=float)
        n = len(self.time)
        self.flux = np.asarray(flux, dtype=float)
        self.flux_err = np.full(n, np.nan) if flux_err is None else np.asarray(flux_err, dtype=float)
        self.quality = np.zeros(n, np.int32) if quality is None else np.asarray(quality, dtype=np.int32)
        self.columns = {k: np.asarray(v) for k, v in columns.items()}
        self.meta = dict(meta or {})
        self._spectrum = spectrum
        self.unit = unit
        for name, a in (("flux", self.flux), ("flux_err", self.flux_err), ("quality", self.quality),
                        *self.columns.items()):
            if len(a) != n:
                raise ValueError(f"{name} has {len(a)} values for {n} times")

    def __getattr__(self, name):
        columns = self.__dict__.get("columns", {})
        if name in columns:
            return columns[name]
        raise AttributeError(f"'LightCurve' object has no attribute {name!r}")

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_document(cls, doc: dict) -> "LightCurve":
        arrays = {name: decode_array(doc[name]) for name in _SERIES_FIELDS if is_encoded(doc.get(name))}
        meta = {k: v for k, v in doc.items() if k not in _SERIES_FIELDS and k not in ("spectrum", "_id")}
        ap = doc.get("aperture") or {}
        if ap:
            meta["aperture"] = {"rows": decode_array(ap["rows"]), "cols": decode_array(ap["cols"]),
                                "n_pixels": ap.get("n_pixels"), "meta": ap.get("meta", {})}
        spec = Spectrum.from_dict(doc["spectrum"]) if doc.get("spectrum") else None
        time = arrays.pop("time")
        flux = arrays.pop("flux")
        return cls(time, flux, arrays.pop("flux_err", None), arrays.pop("quality", None), meta=meta,
                   spectrum=spec, **arrays)

    def _copy(self, mask=None, **changes) -> "LightCurve":
        sel = slice(None) if mask is None else mask
        kw = {"time": self.time[sel], "flux": self.flux[sel], "flux_err": self.flux_err[sel],
              "quality": self.quality[sel], "meta": dict(self.meta), "spectrum": self._spectrum,
              "unit": self.unit, **{k: v[sel] for k, v in self.columns.items()}}
        kw.update(changes)
        return LightCurve(**kw)

    # -- views ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.time)

    @property
    def label(self):
        return self.meta.get("label")

    @property
    def flux_bkg(self):
        return self.columns.get("flux_bkg")

    @property
    def spectrum(self) -> Spectrum | None:
        """The spectrum stored with the light curve (None when there was none)."""
        return self._spectrum

    def good(self, bitmask: int = DEFAULT_BITMASK) -> np.ndarray:
        return good_cadences(self.quality, self.flux, bitmask)

    def remove_bad(self, bitmask: int = DEFAULT_BITMASK) -> "LightCurve":
        """Only the cadences with none of ``bitmask`` in quality and a finite flux."""
        return self._copy(self.good(bitmask))

    def remove_nans(self) -> "LightCurve":
        return self._copy(np.isfinite(self.flux))

    def normalize(self, unit: str = "relative") -> "LightCurve":
        """Flux divided by its median (of the good cadences): "relative" (≈ 1) or "ppm"
        ((flux/median − 1)·10⁶)."""
        good = self.good()
        median = float(np.median(self.flux[good])) if good.any() else float(np.nanmedian(self.flux))
        if unit == "ppm":
            return self._copy(flux=(self.flux / median - 1.0) * 1e6, flux_err=self.flux_err / median * 1e6,
                              unit="ppm")
        if unit != "relative":
            raise ValueError("unit must be 'relative' or 'ppm'")
        return self._copy(flux=self.flux / median, flux_err=self.flux_err / median, unit="")

    def periodogram(self, oversample: float = 5.0, max_frequency: float | None = None,
                    bitmask: int = DEFAULT_BITMASK, **kwargs) -> Spectrum:
        """A fresh Lomb–Scargle spectrum of the good cadences at full resolution (ppm vs
        µHz; see ``pipeline.lightcurves.spectrum``)."""
        good = self.good(bitmask)
        f = self.flux[good]
        y = (f / np.median(f) - 1.0) * 1e6 if self.unit != "ppm" else f
        d = spectrum_mod.analyse(self.time[good], y, oversample=oversample, max_points=10 ** 9,
                                 max_frequency_uhz=max_frequency, **kwargs)
        if d is None:
            raise ValueError("too few good cadences for a spectrum")
        return Spectrum.from_dict(d)

    def to_table(self):
        from astropy.table import Table

        t = Table({"time": self.time, "flux": self.flux, "flux_err": self.flux_err,
                   "quality": self.quality, **self.columns})
        t.meta.update({k: v for k, v in self.meta.items() if not isinstance(v, (dict, list))})
        return t

    def to_lightkurve(self):
        """A ``lightkurve.LightCurve`` with the same columns (needs lightkurve)."""
        import astropy.units as u
        import lightkurve as lk
        from astropy.time import Time

        unit = u.electron / u.s if self.unit == "e-/s" else u.dimensionless_unscaled
        lc = lk.LightCurve(time=Time(self.time, format="btjd", scale="tdb"), flux=self.flux * unit,
                           flux_err=self.flux_err * unit)
        lc["quality"] = self.quality
        for name, values in self.columns.items():
            if name in ("centroid_row", "centroid_col"):
                lc[name] = values * u.pix
            elif name == "flux_bkg":
                lc[name] = values * unit
            else:
                lc[name] = values
        lc.meta.update({k.upper(): v for k, v in self.meta.items() if not isinstance(v, (dict, list))})
        return lc

    def plot(self, ax=None, bitmask: int | None = DEFAULT_BITMASK, **kwargs):
        """Flux vs time (good cadences only unless ``bitmask=None``); needs matplotlib."""
        import matplotlib.pyplot as plt

        lc = self if bitmask is None else self.remove_bad(bitmask)
        ax = ax or plt.subplots(figsize=(8, 3.5))[1]
        kwargs.setdefault("lw", 0.7)
        t, f = lc.time, lc.flux
        if len(t) > 2:        # break the line across gaps longer than 5 cadences
            gap = np.nonzero(np.diff(t) > 5 * np.median(np.diff(t)))[0] + 1
            t, f = np.insert(t, gap, np.nan), np.insert(f, gap, np.nan)
        ax.plot(t, f, **kwargs)
        ax.set_xlabel("time [BTJD]")
        ax.set_ylabel({"e-/s": "flux [e⁻/s]", "ppm": "flux [ppm]"}.get(self.unit, "normalised flux"))
        ax.set_title(self._name())
        return ax

    def _name(self) -> str:
        m = self.meta
        if "sector" in m:
            return f"s{int(m['sector']):04d} {m.get('camera')}-{m.get('ccd')} #{m.get('label')}"
        return "light curve"

    def __repr__(self) -> str:
        if not len(self):
            return f"<LightCurve {self._name()}: empty>"
        good = self.good()
        parts = [f"{len(self)} cadences BTJD {self.time[0]:.3f}–{self.time[-1]:.3f} ({int(good.sum())} good)"]
        if good.any() and self.unit == "ppm":
            parts.append(f"std {float(np.std(self.flux[good])):.0f} ppm")
        elif good.any():
            med = float(np.median(self.flux[good]))
            parts.append(f"median {med:.6g} {self.unit}".rstrip())
        rms, ptp = self.meta.get("rms_hour_ppm"), self.meta.get("ptp_ppm")
        if self.unit == "e-/s" and rms is not None and np.isfinite(rms):
            parts.append(f"1-h rms {rms:.0f} ppm, ptp {ptp:.0f} ppm")
        if self.meta.get("ra") is not None:
            parts.append(f"RA {self.meta['ra']:.5f} Dec {self.meta['dec']:+.5f}")
        return f"<LightCurve {self._name()}: " + ", ".join(parts) + ">"


def load_lightcurve(catalog, sector: int, camera: int, ccd: int, label) -> LightCurve:
    """The light curve of aperture ``label`` of (sector, camera, ccd); KeyError if none."""
    from pipeline.catalog import match

    doc = catalog.lightcurves.find_one(match(sector=int(sector), camera=int(camera),
                                             ccd=int(ccd), label=label))
    if doc is None:
        raise KeyError(f"no light curve for sector {sector} camera {camera} ccd {ccd} label {label!r}")
    return LightCurve.from_document(doc)


def find_lightcurves(catalog, sector: int | None = None, camera: int | None = None,
                     ccd: int | None = None, sort: str = "label", limit: int = 0, **query) -> list[dict]:
    """Summaries (every top-level field but the arrays) of the matching light curves."""
    q = {k: int(v) for k, v in (("sector", sector), ("camera", camera), ("ccd", ccd)) if v is not None}
    q.update(query)
    cursor = catalog.lightcurves.find(q, _SUMMARY_EXCLUDE).sort(sort, 1)
    if limit:
        cursor = cursor.limit(limit)
    return list(cursor)
