"""The truth file written beside the simulated frames, and ``Truth`` to read it.

``truth.fits``:

* primary header: the simulation constants (``SimConfig``: SIMSEED, SIZE, CAMERA,
  CCD, SECTOR, CADENCE, NFRAMES, noise: DEADC, TEXP, READNOIS, NREADS, READVAR;
  PRF: PRFSIGC, PRFSIGW, PRFWING; saturation: FULLWELL, SATLEVEL; glow: GLOWR0,
  GLOWWID, GLOWAMP, BORE_X, BORE_Y; scattered light: SLFLOOR) and SIMVER.
* ``STARS`` table: id, row, col (0-based science coordinates of the centre, without
  jitter), tmag, flux (e-/s), var_type, var_params (JSON), stamp_radius (px).
* ``FRAMES`` table: index, file, time (mid), tstart, tstop (BTJD), cadenceno,
  quality, barycorr (d), date_obs, date_end, jitter_row, jitter_col (px), sky_coef
  (6 polynomial coefficients, e-/s), glow_amp (e-/s at the far corner), sl_amp
  (e-/s, 0 outside scattered-light episodes), sl_angle (rad).
* ``STARFLUX`` image (n_frames, n_stars), float64: noiseless flux of every star in
  every frame (e-/s, variability included, before the PRF/saturation).

``load_truth(path)`` returns a ``Truth``: the same model ``simulate`` rendered with,
so ``truth.render(i)`` rebuilds frame i's written arrays bit for bit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from pipeline.simulate.fits_writer import _fill
from pipeline.simulate.model import Model, SimConfig

SIMVER = "1"
TRUTH_NAME = "truth.fits"

# SimConfig field -> (header keyword, comment)
_CARDS = {
    "seed": ("SIMSEED", "random seed of the simulation"),
    "size": ("SIZE", "[px] science region is SIZE x SIZE"),
    "camera": ("CAMERA", "camera number"),
    "ccd": ("CCD", "CCD number"),
    "sector": ("SECTOR", "observing sector"),
    "cadence": ("CADENCE", "[s] cadence"),
    "n_frames": ("NFRAMES", "number of frames"),
    "variable_fraction": ("VARFRAC", "requested share of variable stars"),
    "deadc": ("DEADC", "texp = DEADC * CADENCE"),
    "read_noise": ("READNOIS", "[e-] read noise per readout"),
    "frame_time": ("FRAMETIM", "[s] time per readout"),
    "full_well": ("FULLWELL", "[e-] full well per readout"),
    "sat_level": ("SATLEVEL", "[e-/s] saturation level per pixel"),
    "sigma_core": ("PRFSIGC", "[px] PRF core Gaussian sigma"),
    "sigma_wing": ("PRFSIGW", "[px] PRF wing Gaussian sigma"),
    "wing_frac": ("PRFWING", "share of the PRF in the wing"),
    "glow_r0": ("GLOWR0", "[px] corner glow starts at this boresight distance"),
    "glow_width": ("GLOWWID", "[px] glow = GLOWAMP*((r-GLOWR0)/GLOWWID)**2"),
    "sl_floor": ("SLFLOOR", "scattered light ramp floor"),
}


def write_truth(path, model: Model) -> Path:
    c = model.config
    h = fits.Header()
    _fill(h, [(key, getattr(c, name), comment) for name, (key, comment) in _CARDS.items()])
    bx, by = c.boresight
    _fill(h, [
        ("TEXP", c.texp, "[s] effective exposure per cadence"),
        ("NREADS", c.n_reads, "readouts per cadence in the read-noise term"),
        ("READVAR", c.read_var, "[(e-/s)^2] NREADS*READNOIS**2/TEXP**2"),
        ("GLOWAMP", c.glow_amp, "[e-/s] nominal corner glow at the far corner"),
        ("BORE_X", bx, "[px] boresight x = col + 44 (full CCD)"),
        ("BORE_Y", by, "[px] boresight y = row (full CCD)"),
        ("NSTARS", model.n_stars, "number of stars"),
        ("BUNIT", "electrons/s", "unit of fluxes and images"),
        ("SIMVER", SIMVER, "truth format version"),
    ])
    stars = Table(model.stars, copy=True)
    frames = Table(model.frames, copy=True)
    hdul = fits.HDUList([
        fits.PrimaryHDU(header=h),
        fits.table_to_hdu(stars),
        fits.table_to_hdu(frames),
        fits.ImageHDU(model.star_flux, name="STARFLUX"),
    ])
    hdul[1].name = "STARS"
    hdul[2].name = "FRAMES"
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    hdul.writeto(tmp, overwrite=True)
    tmp.replace(path)
    return path


class Truth(Model):
    """Ground truth of a simulation, loaded from its truth file.

    Attributes: ``stars`` and ``frames`` (astropy Tables), ``star_flux``
    (n_frames, n_stars), ``config`` (``SimConfig``; its fields are also attributes:
    ``seed``, ``size``, ``camera``, ``ccd``, ``sector``, ``cadence``, ``texp``...),
    ``header`` (the truth file's primary header), ``path``.
    Methods (frame index i, 0-based): ``background(i)``, ``star_image(i)``,
    ``expected_image(i)``, ``variance(i)``, ``render(i)``, ``prf_fraction(row, col,
    pixels)``, ``star_position(k, i)``, ``flux_in_frame(i)``, ``relative_flux(k)``.
    """

    def __init__(self, path):
        path = Path(path)
        with fits.open(path) as hdul:
            header = hdul[0].header.copy()
            star_flux = np.array(hdul["STARFLUX"].data, dtype=np.float64)
        kwargs = {}
        for f in dataclasses.fields(SimConfig):
            key = _CARDS[f.name][0]
            kwargs[f.name] = type(f.default)(header[key])
        stars = Table.read(path, hdu="STARS")
        frames = Table.read(path, hdu="FRAMES")
        for t in (stars, frames):
            t.meta.clear()
            t.convert_bytestring_to_unicode()
        super().__init__(SimConfig(**kwargs), stars, frames, star_flux)
        self.path = path
        self.header = header

    def relative_flux(self, k: int, times=None) -> np.ndarray:
        """1 + signal(t) of star index k from its variability parameters, at ``times``
        (BTJD; default: the frames' mid times)."""
        from pipeline.simulate import variability

        t = self.frames["time"] if times is None else times
        return 1.0 + variability.signal(str(self.stars["var_type"][k]), str(self.stars["var_params"][k]), t)


def load_truth(path) -> Truth:
    """Read a truth file (or the ``truth.fits`` inside a simulation directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / TRUTH_NAME
    return Truth(path)
