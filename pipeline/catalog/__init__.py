"""The catalog (MongoDB): frames, apertures, light curves, jobs."""

from pipeline.catalog.catalog import DATABASE, Catalog, CatalogRef, catalog_ref, connect, match
from pipeline.catalog.server import EmbeddedMongo

__all__ = ["DATABASE", "Catalog", "CatalogRef", "EmbeddedMongo", "catalog_ref", "connect", "match"]
