"""The catalog: MongoDB database ``tess`` through pymongo, the same code for every server.

Collections (DESIGN §3): ``frames`` (one document per cadence image), ``apertures``,
``lightcurves``, ``jobs``, ``stars`` (an optional input star catalog); and the
bookkeeping ``leases`` (``pipeline.catalog.leases``) and ``checkpoints``
(``pipeline.checkpoints``). ``connect``
returns a Catalog for the configured URL, or starts the embedded server when none is
configured.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pymongo
from pymongo import ASCENDING, DESCENDING, UpdateOne

from pipeline.catalog.retry import DEADLINE as RETRY_DEADLINE, RetryingCollection
from pipeline.catalog.server import EmbeddedMongo
from pipeline.config import Settings

DATABASE = "tess"

# (collection, keys, options). Declared here once so every server gets the same set.
INDEXES = [
    ("frames", [("file", ASCENDING), ("cadenceno", ASCENDING)], {"unique": True}),
    ("frames", [("sector", ASCENDING), ("camera", ASCENDING), ("ccd", ASCENDING),
                ("cadenceno", ASCENDING)], {}),
    ("frames", [("cube", ASCENDING), ("cube_index", ASCENDING)], {}),
    ("frames", [("time", ASCENDING)], {}),
    ("frames", [("date_obs", ASCENDING)], {}),
    ("frames", [("status", ASCENDING)], {}),
    ("apertures", [("sector", ASCENDING), ("camera", ASCENDING), ("ccd", ASCENDING),
                   ("label", ASCENDING)], {"unique": True}),
    ("apertures", [("position", "2dsphere")], {}),
    ("apertures", [("ra", ASCENDING), ("dec", ASCENDING)], {}),
    ("apertures", [("flux", DESCENDING)], {}),
    ("lightcurves", [("sector", ASCENDING), ("camera", ASCENDING), ("ccd", ASCENDING),
                     ("label", ASCENDING)], {"unique": True}),
    ("lightcurves", [("ra", ASCENDING), ("dec", ASCENDING)], {}),
    ("jobs", [("status", ASCENDING), ("created", DESCENDING)], {}),
    ("checkpoints", [("stage", ASCENDING), ("cube", ASCENDING)], {}),
    ("stars", [("id", ASCENDING)], {"unique": True}),
    ("stars", [("ra", ASCENDING), ("dec", ASCENDING)], {}),
]


class Catalog:
    """A connection to the catalog database. ``server`` is the embedded server this
    catalog started (stopped with ``close``), or None for an external one."""

    def __init__(self, url: str, database: str = DATABASE, server: EmbeddedMongo | None = None,
                 timeout_ms: int = 10_000, retry_deadline: float = RETRY_DEADLINE):
        self.url = url
        self.server = server
        self.retry_deadline = retry_deadline
        self.client = pymongo.MongoClient(url, serverSelectionTimeoutMS=timeout_ms, tz_aware=True)
        self.db = self.client[database]

    def __reduce__(self):
        """Pickled for Dask tasks as a new connection to the same database; only the
        process that started an embedded server ever stops it."""
        return (Catalog, (self.url, self.db.name))

    def with_retry_deadline(self, seconds: float) -> "Catalog":
        """The same connection, its operations retried for ``seconds`` at most (the
        API answers a request within seconds; a batch task may wait out a restart)."""
        other = object.__new__(type(self))      # not copy.copy: __reduce__ reconnects
        other.__dict__.update(self.__dict__, retry_deadline=float(seconds))
        return other

    def _collection(self, name: str) -> RetryingCollection:
        return RetryingCollection(self.db[name], self.retry_deadline)

    # single operations and queries ride out a server restart (pipeline.catalog.retry)
    frames = property(lambda self: self._collection("frames"))
    apertures = property(lambda self: self._collection("apertures"))
    lightcurves = property(lambda self: self._collection("lightcurves"))
    jobs = property(lambda self: self._collection("jobs"))
    stars = property(lambda self: self._collection("stars"))
    leases = property(lambda self: self._collection("leases"))
    checkpoints = property(lambda self: self._collection("checkpoints"))

    def ensure_indexes(self) -> None:
        for collection, keys, options in INDEXES:
            self.db[collection].create_index(keys, **options)

    def ping(self) -> None:
        self.client.admin.command("ping")

    # -- frames ------------------------------------------------------------------
    def upsert_frames(self, docs: list[dict], batch: int = 500) -> int:
        """Insert or replace frame documents by (file, cadenceno); returns how many
        were new. A file once rejected and now ingested loses its rejection record."""
        if not docs:
            return 0
        now = _now()
        upserted = 0
        for start in range(0, len(docs), batch):
            ops = [UpdateOne(match(file=d["file"], cadenceno=d["cadenceno"]),
                             {"$set": {**d, "updated": now}}, upsert=True)
                   for d in docs[start:start + batch]]
            upserted += self.frames.bulk_write(ops, ordered=False).upserted_count
        self.frames.delete_many({"file": {"$in": sorted({d["file"] for d in docs})},
                                 "status": "rejected"})
        return upserted

    def record_rejection(self, file: str, problem: str, error: str, stage: str = "ingest",
                         path: str | None = None) -> None:
        """Remember that a file could not be used, and why, so nothing is lost silently."""
        self.frames.update_one(
            match(file=file, cadenceno=None),
            {"$set": {"file": file, "cadenceno": None, "status": "rejected", "stage": stage,
                      "problem": problem, "error": error, "path": path, "updated": _now()}},
            upsert=True)

    def rejections(self) -> list[dict]:
        return list(self.frames.find({"status": "rejected"}, {"_id": 0}).sort("file", ASCENDING))

    def ingested_files(self, names) -> dict[str, str]:
        """name → checksum for those of ``names`` already ingested."""
        found = self.frames.find({"file": {"$in": list(names)}, "status": "ingested"},
                                 {"_id": 0, "file": 1, "checksum": 1})
        return {d["file"]: d.get("checksum") for d in found}

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        where = "embedded " if self.server else ""
        return f"<Catalog {where}{self.url} db={self.db.name}>"


def connect(settings: Settings | None = None, state_dir: str | Path | None = None) -> Catalog:
    """The catalog for ``settings``: its ``mongo_url``, or else an embedded server whose
    data lives in the local store folder (or ``state_dir`` when the store is remote)."""
    settings = settings or Settings.load()
    if settings.mongo_url:
        catalog = Catalog(settings.mongo_url)
    else:
        catalog = Catalog.__new__(Catalog)
        folder = Path(state_dir) if state_dir else _local_state_dir(settings.store)
        server = EmbeddedMongo(folder / "catalog")
        Catalog.__init__(catalog, server.url, server=server)
    catalog.ensure_indexes()
    return catalog


def _local_state_dir(store_url: str) -> Path:
    if "://" not in store_url or store_url.startswith("file://"):
        return Path(store_url.removeprefix("file://"))
    return Path(".tess-state")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


@dataclasses.dataclass(frozen=True)
class CatalogRef:
    """What a Dask task needs to reach the catalog (a Catalog holds a live client,
    which does not pickle). ``open()`` gives one Catalog per process and database."""

    url: str
    database: str

    def open(self):
        key = (self.url, self.database)
        cat = _OPEN.get(key)
        if cat is None:
            cat = _OPEN[key] = Catalog(self.url, database=self.database)
        return cat


_OPEN: dict = {}


def catalog_ref(catalog) -> CatalogRef:
    if isinstance(catalog, CatalogRef):
        return catalog
    return CatalogRef(catalog.url, catalog.db.name)


def match(**fields) -> dict:
    """An equality filter written as ``{field: {"$eq": value}}``. Same meaning on any
    MongoDB server; nx-27017 turns a bare ``{field: value}`` into an array-containment
    test that skips its indexes (a light-curve lookup 3-100x slower)."""
    return {k: {"$eq": v} for k, v in fields.items()}
