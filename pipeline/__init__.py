"""tess-pipeline: TASOC photometry of TESS Full-Frame Images on Dask."""

__version__ = "0.1.0"
