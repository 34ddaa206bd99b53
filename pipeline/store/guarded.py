"""zarr access that fails clearly: a zarr store wrapper whose transient failures (the
object store down or erroring after botocore's retries) become ``StoreUnavailable``
naming the store, the object and the operation.

zarr passes s3fs/botocore errors through unchanged, so without this a chunk read or
write deep inside a stage would surface as e.g. ``OSError: [Errno 16]`` with no key —
and an ``OSError`` reads as "bad file" to code that screens inputs.
"""

from __future__ import annotations

from zarr.storage import WrapperStore


class GuardedStore(WrapperStore):
    def __init__(self, store, where, prefix: str):
        super().__init__(store)
        self._where, self._prefix = where, prefix.rstrip("/")

    def _with_store(self, store):
        return type(self)(store, self._where, self._prefix)

    def _errors(self, key: str, action: str):
        return self._where.errors(f"{self._prefix}/{key}", action)

    async def get(self, key, prototype, byte_range=None):
        with self._errors(key, "reading"):
            return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        with self._errors(key_ranges[0][0] if key_ranges else "", "reading"):
            return await self._store.get_partial_values(prototype, key_ranges)

    async def exists(self, key):
        with self._errors(key, "checking"):
            return await self._store.exists(key)

    async def set(self, key, value):
        with self._errors(key, "writing"):
            return await self._store.set(key, value)

    async def set_if_not_exists(self, key, value):
        with self._errors(key, "writing"):
            return await self._store.set_if_not_exists(key, value)

    async def delete(self, key):
        with self._errors(key, "deleting"):
            return await self._store.delete(key)

    async def delete_dir(self, prefix):
        with self._errors(prefix, "deleting"):
            return await self._store.delete_dir(prefix)
