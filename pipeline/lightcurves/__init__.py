"""Light curves: reading them back, their statistics, spectra and FITS export.

The stage that makes them is ``pipeline.stages.lightcurves`` (``run_lightcurves``);
this package holds what it and the services share:

* ``LightCurve``, ``Spectrum``, ``load_lightcurve(catalog, sector, camera, ccd, label)``,
  ``find_lightcurves(catalog, ...)`` — reading (``lightcurve``);
* ``export_fits(catalog, store, out_dir, ...)`` — lightkurve-readable FITS (``export``);
* ``quality`` (bits), ``stats`` (median, 1-hour rms, point-to-point scatter),
  ``spectrum`` (Lomb–Scargle amplitude/power density, prewhitened peaks),
  ``documents`` (the ``lightcurves`` document layout), ``apertures`` (apertures and
  tiles as the stage sees them).
"""

from pipeline.lightcurves.apertures import Aperture, apertures_from_documents, load_apertures
from pipeline.lightcurves.export import export_fits
from pipeline.lightcurves.lightcurve import LightCurve, Spectrum, find_lightcurves, load_lightcurve
from pipeline.lightcurves.quality import (BACKGROUND_SHENANIGANS, DEFAULT_BITMASK, MISSING_PIXELS,
                                          TESS_DEFAULT_BITMASK)

__all__ = ["Aperture", "BACKGROUND_SHENANIGANS", "DEFAULT_BITMASK", "LightCurve", "MISSING_PIXELS",
           "Spectrum", "TESS_DEFAULT_BITMASK", "apertures_from_documents", "export_fits",
           "find_lightcurves", "load_apertures", "load_lightcurve"]
