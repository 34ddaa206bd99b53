"""Surviving S3 hiccups: retries with exponential backoff, then one clear error.

Retrying is botocore's job (s3fs → aiobotocore → botocore), configured here rather
than hand-written: ``with_retries`` adds to an ``s3://`` store's fsspec options

    config_kwargs={"retries": {"mode": "standard", "total_max_attempts": 8}}

so every S3 call — the store's own, zarr's (``FsspecStore``), the readers' — is
retried on connection errors, timeouts, HTTP 500/502/503/504 and throttling codes
(SlowDown, ...), waiting rand(0, 1) · min(2^(n-1), 20) s before retry n: a short
outage (seconds) is ridden out; at most ``worst_case_backoff()`` = 71 s of waiting
(expected ~35 s) are spent before a call gives up. Options the caller gives win
(e.g. fewer attempts in tests). Notes: "standard" mode also keeps a per-client retry
budget (500 tokens, 5 per retry, 10 per timeout, refilled by successes), so a long
outage under heavy concurrency stops retrying sooner — it fails, it never hangs; s3fs
adds its own few retries for a dropped connection (``S3FileSystem.retries``).

What still fails after the retries is classified by ``is_transient``: the store
being unreachable or erroring (as opposed to a missing key, a refused credential or
a bad request) becomes ``StoreUnavailable``, naming the store, the key and what was
being done. It is deliberately *not* an ``OSError``: code that treats an OSError as
"this file is bad" (ingest rejects such files) must not mistake an outage for a bad
file — the run fails instead, and re-running it resumes.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from contextlib import contextmanager

S3_PROTOCOLS = ("s3", "s3a")
ATTEMPTS = 8                  # per S3 call, the first included
MODE = "standard"
MAX_BACKOFF_S = 20.0          # botocore's cap on one wait (standard mode)
# HTTP statuses and S3/AWS error codes that mean "the service, not the request"
TRANSIENT_STATUS = {500, 502, 503, 504, 509, 429}
TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
                   "RequestTimeTooSkewed", "InternalError", "ServiceUnavailable",
                   "RequestThrottled", "TooManyRequestsException", "BandwidthLimitExceeded"}
# errno values s3fs gives 500/503 responses it translates into OSError
TRANSIENT_ERRNO = {errno.EBUSY, getattr(errno, "EREMOTEIO", 121), errno.ETIMEDOUT,
                   errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.EPIPE,
                   errno.EHOSTUNREACH, errno.ENETUNREACH}


class StoreUnavailable(RuntimeError):
    """The object store could not be reached (or kept failing) after every retry."""

    def __init__(self, store: str, key: str, action: str, cause: str,
                 attempts: int | None = None):
        self.store, self.key, self.action, self.cause, self.attempts = (
            store, key, action, cause, attempts)
        tried = f" (gave up after {attempts} attempts with backoff)" if attempts else ""
        super().__init__(f"store {store} unavailable while {action} {key!r}{tried}: {cause}")

    def __reduce__(self):  # picklable across Dask workers
        return (type(self), (self.store, self.key, self.action, self.cause, self.attempts))


def with_retries(protocol: str, storage_options: dict | None,
                 attempts: int = ATTEMPTS) -> dict:
    """``storage_options`` plus the retry policy for an S3 store (other protocols are
    returned unchanged). Values already in ``config_kwargs`` are kept."""
    options = dict(storage_options or {})
    if protocol not in S3_PROTOCOLS:
        return options
    config = dict(options.get("config_kwargs") or {})
    config.setdefault("retries", {"mode": MODE, "total_max_attempts": attempts})
    options["config_kwargs"] = config
    return options


def attempts_of(protocol: str, storage_options: dict | None) -> int | None:
    """Attempts per call under ``storage_options`` (None: no retrying, a local store)."""
    if protocol not in S3_PROTOCOLS:
        return None
    retries = ((storage_options or {}).get("config_kwargs") or {}).get("retries") or {}
    if retries.get("total_max_attempts"):
        return int(retries["total_max_attempts"])
    return int(retries.get("max_attempts", ATTEMPTS - 1)) + 1


def worst_case_backoff(attempts: int = ATTEMPTS) -> float:
    """Longest total wait (s) of one call's retries: sum of min(2^(n-1), 20) over the
    attempts - 1 retries (each wait is that times a random factor in [0, 1))."""
    return float(sum(min(2.0 ** (n - 1), MAX_BACKOFF_S) for n in range(1, attempts)))


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) means the store was unreachable, timed out,
    throttled or failed on its side — not a missing key, a denied credential or a bad
    request."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if _transient_here(exc):
            return True
        if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
            return False
        exc = exc.__cause__ or exc.__context__
    return False


def _transient_here(exc: BaseException) -> bool:
    if isinstance(exc, StoreUnavailable):
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict):               # botocore ClientError
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        code = (response.get("Error") or {}).get("Code")
        return status in TRANSIENT_STATUS or code in TRANSIENT_CODES
    name = type(exc).__name__
    module = type(exc).__module__ or ""
    if module.startswith(("botocore", "aiobotocore", "aiohttp", "urllib3")):
        # botocore.exceptions: EndpointConnectionError, ConnectionClosedError,
        # ReadTimeoutError, ConnectTimeoutError (all HTTPClientError/ConnectionError);
        # aiohttp: ClientConnectorError, ServerDisconnectedError, ...
        return any(part in name for part in ("Connect", "Connection", "Timeout",
                                             "Disconnected", "HTTPClientError",
                                             "IncompleteRead", "ClientPayloadError"))
    if isinstance(exc, (ConnectionError, socket.timeout, TimeoutError, asyncio.TimeoutError)):
        return True
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNO


@contextmanager
def store_errors(store: str, key: str, action: str, attempts: int | None = None):
    """Turn a transient store failure inside the block into ``StoreUnavailable``;
    anything else (a missing key, a bad request, a bug) passes unchanged."""
    try:
        yield
    except StoreUnavailable:
        raise
    except Exception as exc:
        if not is_transient(exc):
            raise
        cause = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StoreUnavailable(store, key, action, f"{type(exc).__name__}: {cause}"
                               if cause else type(exc).__name__, attempts) from exc
