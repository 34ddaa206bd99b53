"""Leases: one holder at a time for a named resource (a cube), across processes and
machines, kept in the catalog's ``leases`` collection.

A lease is a document ``{_id: name, owner, expires}``; taking it is an insert, which
the unique ``_id`` lets only one process win. The holder renews it while it works
(a heartbeat thread), so a holder that dies loses it after ``ttl`` seconds and the
next one takes it over. Two runs of the same CCD therefore serialise: the second
plans its ingest only after the first has recorded its frames, so it sees them as
duplicates instead of appending the cadences a second time."""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time

from pymongo.errors import DuplicateKeyError

TTL = 60.0                   # s a lease outlives its last renewal


class LeaseTimeout(TimeoutError):
    """The lease stayed with another holder for longer than the caller would wait."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _expired_filter(name: str) -> dict:
    return {"_id": name, "expires_ts": {"$lt": time.time()}}


def try_acquire(catalog, name: str, owner: str, ttl: float = TTL) -> bool:
    doc = {"_id": name, "owner": owner, "expires_ts": time.time() + ttl, "taken": _now()}
    try:
        catalog.leases.insert_one(doc)
        return True
    except DuplicateKeyError:
        stale = catalog.leases.find_one({"_id": name})
        if stale and stale.get("owner") == owner:      # our own insert, retried after a drop
            return True
        # a dead holder's lease: take it over (only one taker matches the old expiry)
        if stale and stale.get("expires_ts", 0) < time.time():
            taken = catalog.leases.update_one(
                {"_id": name, "expires_ts": stale["expires_ts"]},
                {"$set": {"owner": owner, "expires_ts": time.time() + ttl, "taken": _now()}})
            return taken.modified_count == 1
        return False


def holder(catalog, name: str) -> str | None:
    doc = catalog.leases.find_one({"_id": name})
    return doc.get("owner") if doc and doc.get("expires_ts", 0) >= time.time() else None


def release(catalog, name: str, owner: str) -> None:
    catalog.leases.delete_one({"_id": name, "owner": owner})


@contextlib.contextmanager
def leases(catalog, names, owner: str, ttl: float = TTL, timeout: float | None = None,
           waiting=None, poll: float = 0.5, cancelled=None):
    """Hold every lease of ``names`` (taken in sorted order, so two holders of
    overlapping sets never deadlock) for the ``with`` block, renewed every ttl/3.
    ``waiting(name, holder)`` is called while another holder has one;
    ``cancelled()`` → True gives up (raises LeaseTimeout)."""
    held: list[str] = []
    started = time.monotonic()
    try:
        for name in sorted(set(names)):
            while not try_acquire(catalog, name, owner, ttl):
                if waiting is not None:
                    waiting(name, holder(catalog, name))
                if cancelled is not None and cancelled():
                    raise LeaseTimeout(f"gave up waiting for {name}")
                if timeout is not None and time.monotonic() - started > timeout:
                    raise LeaseTimeout(f"{name} is held by {holder(catalog, name)} "
                                       f"for more than {timeout:.0f} s")
                time.sleep(poll)
            held.append(name)
        stop = threading.Event()

        def renew():
            while not stop.wait(ttl / 3):
                try:
                    catalog.leases.update_many({"_id": {"$in": held}, "owner": owner},
                                               {"$set": {"expires_ts": time.time() + ttl}})
                except Exception:  # noqa: BLE001 - catalog gone for long: the lease lapses
                    pass

        beat = threading.Thread(target=renew, name=f"lease-{owner}", daemon=True)
        beat.start()
        try:
            yield held
        finally:
            stop.set()
            beat.join()
    finally:
        for name in held:
            release(catalog, name, owner)
