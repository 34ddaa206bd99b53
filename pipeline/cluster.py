"""Where Dask work runs: a local cluster (default), or an existing scheduler."""

from __future__ import annotations

import contextlib
import os
import time

import dask
from distributed import Client, LocalCluster, as_completed

from pipeline.config import Settings

# Kernels are serial numba code and Dask supplies the parallelism: one thread per
# kernel keeps numba's threading layer out of concurrent tasks (DESIGN §5).
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# distributed starts workers with glibc's MALLOC_TRIM_THRESHOLD_ at 64 KiB so memory
# goes back to the OS at once. Setting it also switches off glibc's adaptive mmap
# threshold, so every buffer ≥ 128 KiB (each 2 MB zarr chunk, each codec buffer) is
# a fresh mmap and fresh page faults: a zarr write of 8 full frames cost 0.6-1.0 s of
# system time in a worker vs 0.1 s with these values. Chunk-sized buffers stay on
# the heap and are reused; memory above 64 MiB of free heap still goes back.
MALLOC_TRIM_THRESHOLD = str(64 << 20)
MALLOC_MMAP_THRESHOLD = str(32 << 20)


def local(n_workers: int | None = None, threads_per_worker: int = 1,
          memory_limit: str | None = None, dashboard_address: str | None = ":0",
          processes: bool = True) -> Client:
    """A LocalCluster on this machine (one single-threaded worker per core by default)."""
    os.environ.update({k: os.environ.get(k, v) for k, v in WORKER_ENV.items()})
    n_workers = n_workers or os.cpu_count() or 1
    kwargs = {"memory_limit": memory_limit} if memory_limit else {}
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_":
                          MALLOC_TRIM_THRESHOLD,
                          "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_":
                          MALLOC_MMAP_THRESHOLD}):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                               processes=processes, dashboard_address=dashboard_address, **kwargs)
    return Client(cluster)


def connect(address: str) -> Client:
    """A client of an existing scheduler (``tcp://host:8786``)."""
    return Client(address)


@contextlib.contextmanager
def client_for(settings: Settings, client: Client | None = None, **local_options):
    """The given client, or one for ``settings.scheduler``, or a local cluster that is
    closed again on exit."""
    if client is not None:
        yield client
        return
    own = connect(settings.scheduler) if settings.scheduler else local(**local_options)
    try:
        yield own
    finally:
        cluster = own.cluster if settings.scheduler is None else None
        own.close()
        if cluster is not None:
            cluster.close()


def map_progress(client: Client, fn, items: list, stage: str, progress=None,
                 key=lambda item: item, prefix: str = ""):
    """Run ``fn`` over ``items`` on the cluster and yield (key(item), result) as the
    tasks finish, calling ``progress(stage, done, total)`` along the way. Task keys
    name the stage (``<prefix>-<stage>-<i>-...``) so the dashboard shows what runs."""
    if not items:
        return
    stamp = f"{os.getpid()}-{time.time_ns()}"
    name = f"{prefix}-{stage}" if prefix else stage
    futures = client.map(fn, items, pure=False,
                         key=[f"{name}-{i}-{stamp}" for i in range(len(items))])
    keys = {f.key: key(item) for f, item in zip(futures, items)}
    progress = progress or (lambda stage, done, total: None)
    done = 0
    progress(stage, 0, len(items))
    for future in as_completed(futures):
        result = future.result()
        done += 1
        progress(stage, done, len(items))
        yield keys[future.key], result
