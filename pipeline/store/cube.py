"""Staging cubes: one zarr v3 group per sector/camera/ccd (or per cut-out) holding the
pixel stack (time, row, col) and its per-cadence coordinates.

Layout (DESIGN §3): ``flux`` and ``flux_err`` float32 (time, row, col); 1-D ``time``
(BTJD mid-exposure), ``cadenceno`` and ``quality``. Cadences are sorted by time.
Arrays are chunked (T, 256, 256) with T chosen so a chunk is ≥ 1 MiB, and every 1-D
array uses the same T, so appending cadences only writes chunks at or after the old
end: complete chunks are never rewritten.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import xarray as xr
import zarr
from zarr.codecs import BloscCodec
from zarr.storage import FsspecStore, LocalStore

from pipeline.store.guarded import GuardedStore
from pipeline.store.objects import Store

SPATIAL_CHUNK = 256
MIN_CHUNK_BYTES = 1 << 20
MAX_TIME_CHUNK = 4096
PIXEL_ARRAYS = ("flux", "flux_err")
COORDS = {"time": "float64", "cadenceno": "int64", "quality": "int32"}
# Byte-shuffled zstd at level 1: on simulated full frames it stores float32 flux at
# 1.68x (zarr's default zstd: 1.34x) and reads fastest; lz4 writes faster but
# stores 1.59x. Every cube array uses it, so stages writing new arrays import it.
COMPRESSORS = (BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),)
_FILL = {"float64": np.nan, "float32": np.nan, "int64": -1, "int32": 0}


def _store_errors(action: str):
    """A transient store failure inside the method becomes ``StoreUnavailable`` naming
    the cube's key (zarr passes s3fs/botocore errors through unchanged)."""
    def wrap(method):
        @functools.wraps(method)
        def guarded(self, *args, **kwargs):
            with self.store.errors(self.key, action):
                return method(self, *args, **kwargs)
        return guarded
    return wrap


def chunking(shape: tuple[int, int]) -> tuple[int, int, int]:
    """(time, row, col) zarr chunk for frames of ``shape``: spatial tiles of at most
    256 px, deep enough in time for ≥ 1 MiB of float32, in powers of two."""
    rows, cols = min(shape[0], SPATIAL_CHUNK), min(shape[1], SPATIAL_CHUNK)
    depth = MIN_CHUNK_BYTES / (rows * cols * 4)
    t = min(MAX_TIME_CHUNK, max(8, 1 << math.ceil(math.log2(depth))))
    return t, rows, cols


class Cube:
    """A staging cube in a store. Cheap to create; picklable for Dask tasks."""

    def __init__(self, store: Store, cube_id: str):
        self.store = store
        self.cube_id = cube_id
        self.key = f"staging/{cube_id}.zarr"

    def __repr__(self) -> str:
        if not self.exists():
            return f"<Cube {self.cube_id} (not created) in {self.store.url}>"
        n, rows, cols = self.group()["flux"].shape
        return f"<Cube {self.cube_id}: {n} cadences of {rows}x{cols} px in {self.store.url}>"

    # -- zarr access ------------------------------------------------------------------
    def zarr_store(self, read_only: bool = False):
        if self.store.is_local:
            return LocalStore(self.store.path(self.key), read_only=read_only)
        return GuardedStore(FsspecStore.from_url(self.store.url_of(self.key),
                                                 storage_options=self.store.storage_options,
                                                 read_only=read_only), self.store, self.key)

    def exists(self) -> bool:
        return self.store.exists(f"{self.key}/zarr.json")

    @_store_errors("opening")
    def group(self, mode: str = "r+") -> zarr.Group:
        return zarr.open_group(self.zarr_store(read_only=mode == "r"), mode=mode, zarr_format=3)

    @_store_errors("creating")
    def create(self, shape: tuple[int, int], attrs: dict) -> zarr.Group:
        """Create an empty cube for frames of ``shape`` (no cadences yet)."""
        t, r, c = chunking(shape)
        group = zarr.open_group(self.zarr_store(), mode="w-", zarr_format=3, attributes=attrs)
        for name in PIXEL_ARRAYS:
            group.create_array(name, shape=(0, *shape), chunks=(t, r, c), dtype="float32",
                               fill_value=np.nan, compressors=COMPRESSORS, dimension_names=("time", "row", "col"))
        for name, dtype in COORDS.items():
            group.create_array(name, shape=(0,), chunks=(t,), dtype=dtype,
                               fill_value=_FILL[dtype], compressors=COMPRESSORS, dimension_names=("time",))
        return group

    @property
    def time_chunk(self) -> int:
        return self.group("r")["flux"].chunks[0]

    @_store_errors("reading")
    def coords(self) -> dict[str, np.ndarray]:
        group = self.group("r")
        return {name: group[name][:] for name in COORDS}

    # -- writing ------------------------------------------------------------------------
    @_store_errors("extending")
    def extend(self, time, cadenceno, quality) -> int:
        """Grow the cube by len(time) cadences, writing their coordinates; returns the
        index of the first new cadence. Pixels are written afterwards with ``write``
        (they read as NaN until then). Only the driver calls this, never two at once."""
        group = self.group()
        start = group["time"].shape[0]
        if len(time) and start and float(np.min(time)) <= float(group["time"][start - 1]):
            raise ValueError(f"cube {self.cube_id}: new cadences must come after BTJD "
                             f"{float(group['time'][start - 1]):.6f}")
        n = start + len(time)
        for name in PIXEL_ARRAYS:
            group[name].resize((n, *group[name].shape[1:]))
        for name, values in (("time", time), ("cadenceno", cadenceno), ("quality", quality)):
            group[name].resize((n,))
            group[name][start:n] = np.asarray(values, dtype=COORDS[name])
        return start

    @_store_errors("writing")
    def write(self, start: int, flux: np.ndarray, flux_err: np.ndarray) -> None:
        """Write a block of whole frames at cube index ``start``."""
        group = self.group()
        stop = start + flux.shape[0]
        group["flux"][start:stop] = flux
        group["flux_err"][start:stop] = flux_err

    @_store_errors("writing")
    def set_quality(self, index, bits: int) -> None:
        group = self.group()
        quality = group["quality"]
        for i in np.atleast_1d(index):
            quality[int(i)] = int(quality[int(i)]) | bits

    # -- reading ------------------------------------------------------------------------
    def dataset(self, chunks: dict | str | None = "frames") -> xr.Dataset:
        """The cube as an xarray Dataset backed by Dask. ``chunks="frames"`` gives Dask
        chunks of whole frames, one zarr time-chunk deep; ``None`` the zarr chunks."""
        if chunks == "frames":
            chunks = {"time": self.time_chunk, "row": -1, "col": -1}
        ds = xr.open_zarr(self.zarr_store(read_only=True), consolidated=False,
                          chunks=chunks if chunks is not None else {})
        ds = ds.set_coords([c for c in ("cadenceno", "quality") if c in ds])
        row0, col0 = ds.attrs.get("origin") or (0, 0)
        return ds.assign_coords(row=row0 + np.arange(ds.sizes["row"]),
                                col=col0 + np.arange(ds.sizes["col"]))
