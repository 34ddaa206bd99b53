"""The simulation model: configuration plus the scene (stars, frame schedule, star
fluxes) and the one code path that turns it into pixels. ``simulate`` renders files
with it; ``Truth`` (the loaded truth file) is the same model, so it reproduces every
frame exactly.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from astropy.table import Table

from pipeline.simulate import detector, geometry, prf, sky


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Every constant of a simulation (written to the truth file's header)."""

    seed: int = 0
    size: int = 2048
    camera: int = 1
    ccd: int = 1
    sector: int = 14
    cadence: float = 1800.0          # s
    n_frames: int = 10
    variable_fraction: float = 0.1
    deadc: float = 0.8               # texp = deadc · cadence
    read_noise: float = 10.0         # e- per 2-s readout
    frame_time: float = 2.0          # s per readout
    full_well: float = 2.0e5         # e- per frame
    sat_level: float = 1.0e5         # e-/s per pixel
    sigma_core: float = prf.SIGMA_CORE
    sigma_wing: float = prf.SIGMA_WING
    wing_frac: float = prf.WING_FRAC
    glow_r0: float = sky.GLOW_R0
    glow_width: float = sky.GLOW_WIDTH
    sl_floor: float = sky.SL_FLOOR

    def __post_init__(self):
        if (self.camera, self.ccd) not in geometry.BORESIGHT:
            raise ValueError(f"camera/ccd must be 1..4, got {self.camera}/{self.ccd}")
        if self.size < 8:
            raise ValueError("size must be at least 8")
        if self.n_frames < 1:
            raise ValueError("frames must be at least 1")
        if self.cadence < 2 * self.frame_time or self.seed < 0 or self.sector < 1:
            raise ValueError("need cadence ≥ 4 s, seed ≥ 0, sector ≥ 1")

    @property
    def texp(self) -> float:
        """Effective exposure (s) of one cadence."""
        return self.deadc * self.cadence

    @property
    def n_reads(self) -> int:
        return int(round(self.cadence / self.frame_time))

    @property
    def read_var(self) -> float:
        """Read-noise variance in (e-/s)²: n_reads · read_noise² / texp²."""
        return self.n_reads * self.read_noise ** 2 / self.texp ** 2

    @property
    def boresight(self) -> tuple[float, float]:
        return geometry.boresight(self.camera, self.ccd)

    @property
    def glow_amp(self) -> float:
        return sky.glow_amplitude(self.camera, self.ccd)

    @property
    def shape(self) -> tuple[int, int]:
        return geometry.image_shape(self.size)


class Model:
    """Pixels of every frame from (config, stars, frames, star_flux).

    ``stars``: star table (see ``stars.py``) plus ``stamp_radius``; ``frames``: the
    schedule (see ``schedule.py``); ``star_flux``: (n_frames, n_stars) e-/s.
    All images are science-region arrays (S×S, float64) unless said otherwise.
    """

    def __init__(self, config: SimConfig, stars: Table, frames: Table, star_flux: np.ndarray):
        self.config = config
        self.stars = stars
        self.frames = frames
        self.star_flux = np.ascontiguousarray(star_flux, dtype=np.float64)
        if "stamp_radius" not in stars.colnames:
            stars["stamp_radius"] = prf.stamp_radius(np.max(self.star_flux, axis=0, initial=0.0),
                                                     config.sigma_wing, config.wing_frac, config.sigma_core)
        self._rows = np.ascontiguousarray(stars["row"], dtype=np.float64)
        self._cols = np.ascontiguousarray(stars["col"], dtype=np.float64)
        self._radii = np.ascontiguousarray(stars["stamp_radius"], dtype=np.int64)
        if self.star_flux.shape != (len(frames), len(stars)):
            raise ValueError("star_flux must be (n_frames, n_stars)")

    # ------------------------------------------------------------ attributes
    def __getattr__(self, name):
        """Configuration values as attributes: ``seed``, ``size``, ``cadence``,
        ``texp``, ``read_var``, ``sat_level``, ``boresight``..."""
        cfg = self.__dict__.get("config")
        if cfg is not None and not name.startswith("_") and hasattr(cfg, name):
            return getattr(cfg, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    @property
    def n_stars(self) -> int:
        return len(self.stars)

    def _frame(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < self.n_frames:
            raise IndexError(f"frame {i} out of range 0..{self.n_frames - 1}")
        return i

    # ------------------------------------------------------------ components
    def background(self, i: int) -> np.ndarray:
        """True sky background of frame i: smooth sky + corner glow + scattered light."""
        i = self._frame(i)
        c = self.config
        f = self.frames[i]
        out = np.empty((c.size, c.size))
        bx, by = c.boresight
        sky.background(c.size, np.ascontiguousarray(f["sky_coef"], dtype=np.float64),
                       float(f["glow_amp"]), bx, by, c.glow_r0, c.glow_width,
                       float(f["sl_amp"]), float(f["sl_angle"]), c.sl_floor, out)
        return out

    def _stars_raw(self, i: int) -> np.ndarray:
        c = self.config
        f = self.frames[i]
        out = np.zeros((c.size, c.size))
        prf.render_stars(self._rows + float(f["jitter_row"]), self._cols + float(f["jitter_col"]),
                         self.star_flux[i], self._radii, c.sigma_core, c.sigma_wing, c.wing_frac, out)
        return out

    def _components(self, i: int):
        i = self._frame(i)
        bkg = self.background(i)
        stars = self._stars_raw(i)
        lost = detector.bleed(stars, bkg, self.config.sat_level)
        return bkg, stars, lost

    def star_image(self, i: int, return_lost: bool = False):
        """Noiseless star light of frame i (jitter, variability and saturation bleed
        included). With ``return_lost``: also the e-/s that bled off the top/bottom."""
        _, stars, lost = self._components(i)
        return (stars, lost) if return_lost else stars

    def expected_image(self, i: int) -> np.ndarray:
        """Noiseless science image of frame i: background + stars (after bleeding)."""
        bkg, stars, _ = self._components(i)
        return bkg + stars

    def variance(self, i: int) -> np.ndarray:
        """Noise variance (e-/s)² of frame i's science pixels."""
        return detector.variance(self.expected_image(i), 1.0 / self.config.texp, self.config.read_var)

    def noise_rng(self, i: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, self._frame(i)])

    def render(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The written HDU 1 and HDU 2 arrays of frame i (float32, (S+30)×(S+88))."""
        c = self.config
        bkg, stars, _ = self._components(i)
        z = self.noise_rng(i).standard_normal(c.shape, dtype=np.float32)
        image = np.empty(c.shape, dtype=np.float32)
        uncert = np.empty(c.shape, dtype=np.float32)
        detector.compose(bkg, stars, z, geometry.COL_OFFSET, 1.0 / c.texp, c.read_var, image, uncert)
        return image, uncert

    def science(self, image: np.ndarray) -> np.ndarray:
        """The science region of a written-shape array."""
        return image[geometry.science_slices(self.config.size)]

    # ------------------------------------------------------------ helpers
    def star_position(self, k: int, i: int) -> tuple[float, float]:
        """(row, col) of star index k in frame i, jitter included."""
        f = self.frames[self._frame(i)]
        return float(self._rows[k] + f["jitter_row"]), float(self._cols[k] + f["jitter_col"])

    def prf_fraction(self, row: float, col: float, pixels) -> float:
        """Share of the PRF of a star centred at (row, col) inside ``pixels`` (boolean
        S×S mask, (N, 2) array of (row, col), or a (rows, cols) tuple); for star k in
        frame i use ``star_position(k, i)``."""
        c = self.config
        return prf.prf_fraction(row, col, pixels, c.sigma_core, c.sigma_wing, c.wing_frac)

    def flux_in_frame(self, i: int) -> np.ndarray:
        """Per star, the flux (e-/s) of frame i whose PRF falls on the science region
        (the light a perfect detector without saturation would record)."""
        c = self.config
        f = self.frames[self._frame(i)]
        frac = prf.prf_fraction_box(self._rows + f["jitter_row"], self._cols + f["jitter_col"],
                                    0, c.size, 0, c.size, c.sigma_core, c.sigma_wing, c.wing_frac)
        return self.star_flux[i] * frac

    def radius_map(self) -> np.ndarray:
        """Distance of each science pixel from the camera boresight (full-CCD pixels,
        as used by the corner glow)."""
        return sky.radius_map(self.config.size, self.config.camera, self.config.ccd)
