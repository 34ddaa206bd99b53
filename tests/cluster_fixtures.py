"""A Dask LocalCluster for tests (the session's ``dask_client`` and modules that need
a cluster of their own size)."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def local_client(n_workers: int):
    """A LocalCluster and its client, closed on exit."""
    from pipeline.cluster import local

    client = local(n_workers=n_workers)
    try:
        yield client
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
