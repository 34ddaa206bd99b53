"""What the API process holds: settings, the store, the catalog, the Dask client, and
the jobs it submitted itself. Services are opened on first use, so the API starts
(and ``/health`` answers, naming what is down) even when one of them is not up."""

from __future__ import annotations

import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from pipeline.config import Settings
from pipeline.store import Store

log = logging.getLogger("pipeline.api")

DEFAULT_MAX_UPLOAD_BYTES = 2 << 30      # per file; a calibrated FFI is ~35 MB, a TPF < 1 GB
REQUEST_RETRY_SECONDS = 5.0             # a catalog restart shorter than this is not a 503


class ServiceUnavailable(RuntimeError):
    """A backing service (store, catalog, scheduler) cannot be reached: HTTP 503."""

    def __init__(self, service: str, message: str):
        self.service = service
        super().__init__(f"{service} unavailable: {message}")


def env_max_upload_bytes(environ=None) -> int:
    """TESS_API_MAX_UPLOAD_MB (per file), else the default."""
    environ = os.environ if environ is None else environ
    value = environ.get("TESS_API_MAX_UPLOAD_MB")
    if not value:
        return DEFAULT_MAX_UPLOAD_BYTES
    try:
        megabytes = float(value)
    except ValueError:
        raise ValueError(f"TESS_API_MAX_UPLOAD_MB={value!r} is not a number of megabytes") from None
    if not math.isfinite(megabytes) or megabytes <= 0:
        raise ValueError(f"TESS_API_MAX_UPLOAD_MB={value!r}: must be a positive, finite number")
    return int(megabytes * (1 << 20))


def env_cors_origins(environ=None) -> list[str]:
    """TESS_API_CORS_ORIGINS: comma-separated origins allowed to call the API from a
    browser. Empty (the default): no CORS headers at all, so browsers refuse
    cross-origin calls."""
    environ = os.environ if environ is None else environ
    return [o.strip() for o in environ.get("TESS_API_CORS_ORIGINS", "").split(",") if o.strip()]


class ApiState:
    def __init__(self, settings: Settings, client=None, store: Store | None = None, catalog=None,
                 max_upload_bytes: int | None = None):
        self.settings = settings
        self.api_key = settings.api_key or None
        self.max_upload_bytes = int(max_upload_bytes or DEFAULT_MAX_UPLOAD_BYTES)
        self._store = store
        self._catalog = catalog
        self._own_catalog = catalog is None
        self._client = client
        self._own_client = False
        self._lock = threading.RLock()
        # /health's checks get threads of their own: in the shared request pool they
        # would queue behind slow catalog reads and report healthy services as down
        self.health_pool = ThreadPoolExecutor(3, thread_name_prefix="health")
        self.jobs: dict = {}            # job id → pipeline.graph.Job submitted by this process
        self.stats_cache: tuple[float, dict | None] = (0.0, None)

    # -- services, opened on first use ------------------------------------------------
    @property
    def store(self) -> Store:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    try:
                        self._store = Store.from_settings(self.settings)
                    except Exception as exc:  # noqa: BLE001 - any backend error: the store is down
                        raise ServiceUnavailable("store", f"{type(exc).__name__}: {exc}") from exc
        return self._store

    @property
    def catalog(self):
        """The catalog for request handlers: a server restart is ridden out for
        ``REQUEST_RETRY_SECONDS`` at most, then the request gets its 503."""
        return self.job_catalog.with_retry_deadline(REQUEST_RETRY_SECONDS)

    @property
    def job_catalog(self):
        """The catalog for the jobs this process submits and watches (the pipeline's
        own retry deadline)."""
        if self._catalog is None:
            with self._lock:
                if self._catalog is None:
                    from pipeline.catalog import connect

                    try:
                        self._catalog = connect(self.settings)
                    except Exception as exc:  # noqa: BLE001
                        raise ServiceUnavailable("catalog", f"{type(exc).__name__}: {exc}") from exc
        return self._catalog

    @property
    def has_client(self) -> bool:
        return self._client is not None

    def client(self, start_local: bool = True):
        """The Dask client: the one given, else one connected to ``settings.scheduler``,
        else (``start_local``) a local cluster started now and closed with the API."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._open_client(start_local)
        return self._client

    def _open_client(self, start_local: bool):
        from pipeline.cluster import connect, local

        if self.settings.scheduler:
            try:
                client = connect(self.settings.scheduler)
            except Exception as exc:  # noqa: BLE001
                raise ServiceUnavailable("scheduler", f"{self.settings.scheduler}: "
                                         f"{type(exc).__name__}: {exc}") from exc
        elif start_local:
            log.info("no scheduler configured (TESS_SCHEDULER): starting a local Dask cluster")
            client = local()
        else:
            return None
        self._own_client = True
        return client

    def close(self) -> None:
        self.health_pool.shutdown(wait=False, cancel_futures=True)
        client, self._client = self._client, None
        if client is not None and self._own_client:
            cluster = getattr(client, "cluster", None) if not self.settings.scheduler else None
            client.close()
            if cluster is not None:
                cluster.close()
        catalog, self._catalog = self._catalog, None
        if catalog is not None and self._own_catalog:
            catalog.close()
