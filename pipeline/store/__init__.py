"""The object store (raw, staging and curated zones) and the zarr cubes in it."""

from pipeline.store.cube import COMPRESSORS, Cube, chunking
from pipeline.store.objects import ZONES, RawConflict, Store, file_checksum
from pipeline.store.retry import StoreUnavailable, is_transient

__all__ = ["COMPRESSORS", "Cube", "RawConflict", "Store", "StoreUnavailable", "ZONES",
           "chunking", "file_checksum", "is_transient"]
