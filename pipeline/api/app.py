"""The FastAPI application: ``create_app(settings, client=None)``.

    from pipeline.api import create_app, serve
    app = create_app(Settings.load())          # an ASGI app (uvicorn, tests)
    serve(host="127.0.0.1", port=8000)        # or: tess-pipeline api

Endpoints (OpenAPI at /docs, /openapi.json): /health, /stats, /raw, /staging,
/staging/cubes, /staging/cubes/{cube}/image, /download, /curated/apertures[/{id}],
/curated/lightcurves[/{id}[/spectrum]], /jobs[/{id}], /inject. Write endpoints
(POST /inject, POST and DELETE /jobs) need the ``X-API-Key`` header. CORS is off
unless origins are configured (TESS_API_CORS_ORIGINS).
"""

from __future__ import annotations

import contextlib
import os

import anyio.to_thread

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from pipeline import __version__
from pipeline.api import errors
from pipeline.api.routes import cubes, curated, download, frames, inject, jobs, service
from pipeline.api.state import ApiState, env_cors_origins, env_max_upload_bytes
from pipeline.config import Settings

DEFAULT_THREADS = 8

DESCRIPTION = """HTTP access to tess-pipeline's store and catalog: frames, cubes, apertures,
light curves and spectra; file upload and job submission.

* Lists are paginated: `limit` (1..1000) and `page_token` (the previous page's
  `next_page_token`); there is no cap on how far you can page.
* Write endpoints need the header `X-API-Key`.
* Errors are JSON `{"detail": "message"}`; invalid parameters are 422.
"""


def create_app(settings: Settings | None = None, client=None, *, store=None, catalog=None,
               max_upload_bytes: int | None = None, cors_origins: list[str] | None = None) -> FastAPI:
    """The API on ``settings`` (default ``Settings.load()``). ``client``: a Dask client
    for jobs and the scheduler check (default: one for ``settings.scheduler``, or a
    local cluster started with the first job). ``store``/``catalog``: already opened
    ones to use (default: opened from the settings on first use, closed on shutdown).
    ``max_upload_bytes``: per uploaded file (default TESS_API_MAX_UPLOAD_MB or 2 GiB).
    ``cors_origins``: browser origins allowed (default TESS_API_CORS_ORIGINS; none)."""
    settings = settings or Settings.load()
    threads = int(os.environ.get("TESS_API_THREADS") or DEFAULT_THREADS)
    state = ApiState(settings, client=client, store=store, catalog=catalog,
                     max_upload_bytes=max_upload_bytes or env_max_upload_bytes())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        # Handlers that query the catalog run in worker threads. More of them than a few
        # per core only queue on the GIL and on the catalog server, and the tail latency
        # grows with the queue (anyio's default is 40).
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        if settings.scheduler and client is None:
            # connect in the background (importing distributed alone takes ~1 s), so the
            # first /health does not spend its 3 s budget on it; a failure is /health's to say
            state.health_pool.submit(_warm_client, state)
        yield
        state.close()

    app = FastAPI(title="tess-pipeline API", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan)
    app.state.api = state
    errors.install(app)
    for module in (service, frames, cubes, download, curated, jobs, inject):
        app.include_router(module.router)
    origins = env_cors_origins() if cors_origins is None else list(cors_origins)
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["X-API-Key", "Content-Type", "Range"],
                           expose_headers=["Content-Range", "Content-Disposition"])
    return app


def _warm_client(state: ApiState) -> None:
    try:
        state.client(start_local=False)
    except Exception:  # noqa: BLE001 - reported by /health and the job endpoints
        pass
