"""The object store: one fsspec URL (a local folder by default, ``s3://`` in production)
holding three zones: ``raw/`` (original files), ``staging/`` (zarr cubes) and
``curated/`` (exports).

An S3 store's options carry the retry policy of ``pipeline.store.retry`` (every call
retried with backoff on connection errors, 5xx and throttling); what still fails is a
``StoreUnavailable`` naming the store, the key and the operation."""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil

import fsspec
from fsspec.core import split_protocol, url_to_fs

from pipeline.config import Settings
from pipeline.store.retry import attempts_of, store_errors, with_retries

ZONES = ("raw", "staging", "curated")
_HASH_BLOCK = 8 << 20


class RawConflict(ValueError):
    """A different file with the same name is already in the raw zone."""


class Store:
    """A store root. Picklable (Dask tasks carry it), so workers open the same store."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url.rstrip("/") or url
        protocol = split_protocol(self.url)[0] or "file"
        self.storage_options = with_retries(protocol, storage_options)
        self.attempts = attempts_of(protocol, self.storage_options)
        self.fs, self.root = url_to_fs(self.url, **self.storage_options)
        self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        if self.is_local:
            self.root = os.path.abspath(self.root)
            self.fs.makedirs(self.root, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Store":
        return cls(settings.store, settings.storage_options)

    @property
    def is_local(self) -> bool:
        return self.protocol in ("file", "local")

    def path(self, key: str) -> str:
        """The filesystem path of a key (no protocol)."""
        return posixpath.join(self.root, key) if not self.is_local else os.path.join(self.root, key)

    def url_of(self, key: str) -> str:
        return self.path(key) if self.is_local else f"{self.protocol}://{self.path(key)}"

    def exists(self, key: str) -> bool:
        with self.errors(key, "checking"):
            return self.fs.exists(self.path(key))

    def open(self, key: str, mode: str = "rb"):
        """A file object (errors while reading/writing it later are the caller's)."""
        with self.errors(key, "opening"):
            return self.fs.open(self.path(key), mode)

    def errors(self, key: str, action: str):
        """Context manager: a transient failure inside becomes ``StoreUnavailable``."""
        return store_errors(self.url, key, action, self.attempts)

    def __getstate__(self):
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state):
        self.__init__(state["url"], state["storage_options"])

    def __repr__(self) -> str:
        return f"<Store {self.url}>"

    # -- raw zone ------------------------------------------------------------------
    @staticmethod
    def raw_key(name: str, sector: int, camera: int, ccd: int) -> str:
        return f"raw/s{sector:04d}/{camera}-{ccd}/{name}"

    def put_raw(self, source: str | bytes, key: str, checksum: str,
                source_options: dict | None = None, name: str | None = None) -> str:
        """Copy ``source`` (the file's bytes, or a local path or fsspec URL opened with
        ``source_options``) to ``key`` unless the same file is already there. Returns
        "uploaded" or "duplicate"; raises RawConflict when a different file holds the
        name. ``name`` names the source in messages when it is bytes."""
        target = self.path(key)
        with self.errors(key, "writing"):
            if self.fs.exists(target):
                if file_checksum(target, self.fs) == checksum:
                    return "duplicate"
                raise RawConflict(f"{name or source}: a different file named "
                                  f"{posixpath.basename(key)} is already in the raw zone at {key}")
            partial = f"{target}.partial"
            if self.is_local:
                self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
            if self.is_local and isinstance(source, str) and "://" not in source:
                shutil.copyfile(source, partial)  # in the kernel: no pass through Python
            else:
                self._write_from(source, partial, source_options)
            self.fs.mv(partial, target)  # readers never see a half-written original
        return "uploaded"

    def _write_from(self, source, target: str, source_options: dict | None) -> None:
        with self.fs.open(target, "wb") as dst:
            if isinstance(source, (bytes, bytearray, memoryview)):
                dst.write(source)
            else:
                with fsspec.open(source, "rb", **(source_options or {})) as src:
                    while block := src.read(_HASH_BLOCK):
                        dst.write(block)


def file_checksum(path: str, fs=None) -> str:
    """sha256 of a file (a local path, an fsspec URL, or a path on ``fs``)."""
    digest = hashlib.sha256()
    opener = fs.open(path, "rb") if fs is not None else fsspec.open(path, "rb")
    with opener as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()
