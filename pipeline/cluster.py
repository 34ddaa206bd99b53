"""Where Dask work runs: a local cluster (default), or an existing scheduler."""

from __future__ import annotations

import contextlib
import os

from distributed import Client, LocalCluster

from pipeline.config import Settings

# Kernels are serial numba code and Dask supplies the parallelism: one thread per
# kernel keeps numba's threading layer out of concurrent tasks (DESIGN §5).
WORKER_ENV = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
              "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def local(n_workers: int | None = None, threads_per_worker: int = 1,
          memory_limit: str | None = None, dashboard_address: str | None = ":0",
          processes: bool = True) -> Client:
    """A LocalCluster on this machine (one single-threaded worker per core by default)."""
    os.environ.update({k: os.environ.get(k, v) for k, v in WORKER_ENV.items()})
    n_workers = n_workers or os.cpu_count() or 1
    kwargs = {"memory_limit": memory_limit} if memory_limit else {}
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
