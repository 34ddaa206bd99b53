"""The catalog (MongoDB): frames, apertures, light curves, jobs."""

from pipeline.catalog.catalog import DATABASE, Catalog, connect
from pipeline.catalog.server import EmbeddedMongo

__all__ = ["DATABASE", "Catalog", "EmbeddedMongo", "connect"]
