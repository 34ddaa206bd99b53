"""Simulated TESS calibrated FFIs with ground truth.

    from pipeline.simulate import simulate, load_truth
    sim = simulate("out", frames=10, size=256, camera=1, ccd=1, sector=14, seed=0)
    truth = load_truth(sim.truth_path)
    truth.expected_image(0), truth.variance(0), truth.star_flux[:, k]

Modules: ``geometry`` (layout, pointing, WCS, times), ``stars`` (star tables),
``variability`` (injected signals), ``prf`` (PRF and star rendering), ``sky``
(background, corner glow, scattered light), ``detector`` (saturation bleed, noise),
``schedule`` (per-frame parameters), ``model`` (scene → pixels), ``fits_writer``
(SPOC-format files), ``truth`` (truth file), ``runner`` (``simulate``).
"""

from pipeline.simulate.model import Model, SimConfig
from pipeline.simulate.runner import Simulation, build_model, simulate
from pipeline.simulate.stars import make_stars, random_stars, tmag_to_flux
from pipeline.simulate.truth import Truth, load_truth

__all__ = ["simulate", "load_truth", "Simulation", "Truth", "SimConfig", "Model",
           "build_model", "make_stars", "random_stars", "tmag_to_flux"]
