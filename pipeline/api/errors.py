"""Every error is JSON ``{"detail": "message"}`` with the right status; bad input is a
4xx naming the problem, an unreachable store/catalog/scheduler a 503 naming the
service. Only a bug is a 500, and its message never carries internals."""

from __future__ import annotations

import logging

import pymongo.errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from pipeline.api.keys import BadKey
from pipeline.api.pagination import PageTokenError
from pipeline.api.responses import JSON
from pipeline.api.state import ServiceUnavailable
from pipeline.store import StoreUnavailable

log = logging.getLogger("pipeline.api")


def error(status: int, detail: str, headers: dict | None = None, **extra) -> JSON:
    return JSON({"detail": detail, **extra}, status_code=status, headers=headers)


def _where(loc) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("query", "path", "header", "body", "cookie"):
        source, name = parts[0], ".".join(parts[1:])
        return f"{source} parameter {name!r}" if name else source
    return ".".join(parts)


def _validation(request: Request, exc: RequestValidationError) -> JSON:
    errors = []
    for e in exc.errors():
        errors.append({"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                       "type": str(e.get("type", ""))})
    message = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in errors) or "invalid request"
    return error(422, message, errors=errors)


def _http(request: Request, exc: HTTPException) -> JSON:
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return error(exc.status_code, detail, headers=getattr(exc, "headers", None))


def _catalog_down(request: Request, exc: pymongo.errors.PyMongoError) -> JSON:
    log.warning("catalog error on %s %s: %s", request.method, request.url.path, exc)
    if isinstance(exc, (pymongo.errors.ConnectionFailure, pymongo.errors.ServerSelectionTimeoutError)):
        return error(503, "catalog unavailable: the MongoDB server does not answer")
    return error(503, f"catalog error: {str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}")


def _store_error(request: Request, exc: OSError) -> JSON:
    if isinstance(exc, FileNotFoundError):
        return error(404, "no such object in the store")
    log.warning("store error on %s %s: %s", request.method, request.url.path, exc)
    return error(503, f"store unavailable: {type(exc).__name__}: {str(exc)[:300]}")


def _unavailable(request: Request, exc: ServiceUnavailable) -> JSON:
    return error(503, str(exc))


def _internal(request: Request, exc: Exception) -> JSON:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error(500, "internal error (the server log has the details)")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(PageTokenError, lambda r, e: error(422, f"query parameter 'page_token': {e}"))
    app.add_exception_handler(BadKey, lambda r, e: error(400, str(e)))
    app.add_exception_handler(ServiceUnavailable, _unavailable)
    app.add_exception_handler(pymongo.errors.PyMongoError, _catalog_down)
    app.add_exception_handler(OSError, _store_error)
    # the store's retries gave up (pipeline.store.retry): an outage, not a bad request
    app.add_exception_handler(StoreUnavailable, lambda r, e: error(503, str(e)))
    try:                                  # S3 through s3fs: connection errors from botocore
        from botocore.exceptions import BotoCoreError
    except ImportError:
        pass
    else:
        app.add_exception_handler(BotoCoreError, lambda r, e: error(503, f"store unavailable: {e}"))
    app.add_exception_handler(Exception, _internal)
