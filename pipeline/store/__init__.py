"""The object store (raw, staging and curated zones) and the zarr cubes in it."""

from pipeline.store.cube import Cube, chunking
from pipeline.store.objects import ZONES, RawConflict, Store, file_checksum

__all__ = ["Cube", "RawConflict", "Store", "ZONES", "chunking", "file_checksum"]
