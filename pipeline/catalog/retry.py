"""Riding out a catalog server that restarts or drops connections.

pymongo retries a failed read or write once, at once; a server that is down for a
few seconds (a restart, a failover) fails that retry too and the operation raises
``AutoReconnect``. The catalog's collections are therefore wrapped: each single
operation is retried on connection errors with exponential backoff for up to
``DEADLINE`` seconds, then the error goes up, naming the operation. A ``find``
query is retried the same way until its first batch arrives; a failure after
documents were handed out goes up (a re-read could repeat or miss documents).
Every write the pipeline makes is idempotent (upserts by a unique key, deletes by a
filter, inserts whose duplicate means "already done"), so a retry after a write that
did land changes nothing. Operations inside a session (transactions) are not retried here:
the transaction as a whole is retried by ``with_transaction``."""

from __future__ import annotations

import functools
import random
import time

from pymongo.errors import ConnectionFailure

DEADLINE = 60.0                 # s of retrying before an operation fails
FIRST_WAIT = 0.1                # s, doubled per retry
MAX_WAIT = 5.0

RETRIED = frozenset({"insert_one", "insert_many", "update_one", "update_many", "replace_one",
                     "delete_one", "delete_many", "bulk_write", "find_one", "find_one_and_update",
                     "count_documents", "estimated_document_count", "distinct", "create_index",
                     "drop"})


class CatalogUnavailable(ConnectionFailure):
    """The catalog server stayed unreachable for longer than the retry deadline."""


def retrying(fn, what: str, deadline: float = DEADLINE):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        if kwargs.get("session") is not None:
            return fn(*args, **kwargs)
        started = time.monotonic()
        wait = FIRST_WAIT
        while True:
            try:
                return fn(*args, **kwargs)
            except ConnectionFailure as exc:
                if time.monotonic() - started + wait > deadline:
                    raise CatalogUnavailable(f"catalog unreachable for {deadline:.0f} s during "
                                             f"{what}: {exc}") from exc
                time.sleep(wait * (0.5 + random.random() / 2))
                wait = min(wait * 2, MAX_WAIT)
    return call


# Cursor methods that configure the query and return the cursor itself
_CHAINED = frozenset({"sort", "limit", "skip", "batch_size", "hint", "max_time_ms", "comment",
                      "collation", "allow_disk_use", "where", "min", "max"})


class RetryingCursor:
    """The cursor of ``find``: iterating it sends the query, which is retried (on a
    fresh clone of the cursor) until the first document or the end arrives."""

    def __init__(self, cursor, what: str, deadline: float = DEADLINE):
        self._cursor = cursor
        self._what = what
        self._deadline = deadline
        self._started = False

    def __getattr__(self, name):
        attr = getattr(self._cursor, name)
        if name in _CHAINED:
            @functools.wraps(attr)
            def chained(*args, **kwargs):
                attr(*args, **kwargs)
                return self
            return chained
        return attr

    def __iter__(self):
        return self

    def __next__(self):
        if self._started:
            return next(self._cursor)
        doc = retrying(self._first, self._what, self._deadline)()
        self._started = True
        return doc

    def _first(self):
        try:
            return next(self._cursor)
        except ConnectionFailure:
            self._cursor = self._cursor.clone()     # the failed one is dead: same query again
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._cursor.close()


class RetryingCollection:
    """A pymongo Collection whose single operations are retried (``RETRIED``), and
    whose ``find`` queries are (``RetryingCursor``); every other attribute is the
    collection's own."""

    def __init__(self, collection, deadline: float = DEADLINE):
        self._collection = collection
        self._deadline = deadline

    def __getattr__(self, name):
        attr = getattr(self._collection, name)
        if name in RETRIED:
            return retrying(attr, f"{self._collection.name}.{name}", self._deadline)
        if name == "find":
            return functools.wraps(attr)(lambda *args, **kwargs: RetryingCursor(
                attr(*args, **kwargs), f"{self._collection.name}.find", self._deadline))
        return attr

    def __getitem__(self, name):
        return self._collection[name]

    def __repr__(self) -> str:
        return f"<RetryingCollection {self._collection.full_name}>"
