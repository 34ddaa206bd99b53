"""``simulate``: write a stack of simulated calibrated FFIs and their truth file."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.simulate import fits_writer, geometry, schedule, stars as _stars, variability
from pipeline.simulate.model import Model, SimConfig
from pipeline.simulate.truth import TRUTH_NAME, Truth, load_truth, write_truth

# independent random streams of the scene, keyed under the seed
_STREAM_STARS = 1
_STREAM_SCHEDULE = 2


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(stream,)))


@dataclasses.dataclass
class Simulation:
    """What ``simulate`` wrote: ``paths`` (FFI files in time order), ``truth_path``."""

    outdir: Path
    paths: list[Path]
    truth_path: Path
    config: SimConfig

    def load_truth(self) -> Truth:
        return load_truth(self.truth_path)


def build_model(frames: int = 10, size: int = 2048, camera: int = 1, ccd: int = 1,
                sector: int = 14, cadence: float = 1800.0, seed: int = 0,
                n_stars: int | None = None, variable_fraction: float = 0.1,
                stars=None) -> Model:
    """The scene of a simulation (stars, schedule, star fluxes) without writing it."""
    config = SimConfig(seed=int(seed), size=int(size), camera=int(camera), ccd=int(ccd),
                       sector=int(sector), cadence=float(cadence), n_frames=int(frames),
                       variable_fraction=float(variable_fraction))
    tref = geometry.sector_start(config.sector)
    if stars is None:
        table = _stars.random_stars(config.size, _rng(seed, _STREAM_STARS), n_stars=n_stars,
                                    variable_fraction=config.variable_fraction,
                                    cadence=config.cadence, tref=tref)
    else:
        table = _stars.as_star_table(stars)
    frames_table = schedule.make_frames(config, _rng(seed, _STREAM_SCHEDULE))
    flux = variability.star_flux(table["flux"], table["var_type"], table["var_params"],
                                 frames_table["time"])
    return Model(config, table, frames_table, flux)


def simulate(outdir, frames: int = 10, size: int = 2048, camera: int = 1, ccd: int = 1,
             sector: int = 14, cadence: float = 1800.0, seed: int = 0,
             n_stars: int | None = None, variable_fraction: float = 0.1,
             progress: Callable[[int, int], None] | None = None,
             stars=None) -> Simulation:
    """Write ``frames`` simulated SPOC calibrated FFIs of one camera/CCD to ``outdir``
    plus ``truth.fits`` beside them.

    size: science region S×S (image (S+30)×(S+88)); cadence in seconds; n_stars:
    default ~8000 per full 2048² CCD scaled to the area; variable_fraction: share
    of stars with injected variability; stars: an explicit star table (row, col,
    tmag or flux, optional var_type/var_params; see ``make_stars``) instead of the
    random field; progress(i_done, n_total) is called after each file.
    Same arguments → byte-identical files.
    """
    model = build_model(frames=frames, size=size, camera=camera, ccd=ccd, sector=sector,
                        cadence=cadence, seed=seed, n_stars=n_stars,
                        variable_fraction=variable_fraction, stars=stars)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = []
    n = model.n_frames
    for i in range(n):
        image, uncert = model.render(i)
        paths.append(fits_writer.write_ffi(outdir / str(model.frames["file"][i]), model, i, image, uncert))
        if progress is not None:
            progress(i + 1, n)
    truth_path = write_truth(outdir / TRUTH_NAME, model)
    return Simulation(outdir=outdir, paths=paths, truth_path=truth_path, config=model.config)
