"""Ingest tasks that run on Dask workers: header scans, hashing, and the pixel task
that reads each file once (hash, raw copy, pixels) and writes whole time chunks."""

from __future__ import annotations

import hashlib
from collections import defaultdict

import fsspec
import numpy as np

from pipeline.io import TessFileError, read, read_info
from pipeline.store import RawConflict, Store, is_transient


def options_for(path: str, store: Store) -> dict:
    """Inputs in the store's own object store (e.g. files injected into its raw zone)
    are read with the store's credentials; local paths need none."""
    return store.storage_options if path.startswith(f"{store.protocol}://") else {}


def scan(job):
    path, options = job
    try:
        return read_info(path, storage_options=options)
    except TessFileError as exc:
        return exc
    except (OSError, ValueError) as exc:
        if is_transient(exc):  # the store is down, the file may be fine: fail the task
            raise
        return TessFileError(path, "unreadable", str(exc))


def hash_file(job):
    path, options = job
    try:
        return hashlib.sha256(read_bytes(path, options)).hexdigest()
    except OSError as exc:
        if is_transient(exc):
            raise
        return exc


def read_bytes(path: str, options: dict) -> bytes:
    with fsspec.open(path, "rb", **options) as f:
        return f.read()


def write_chunk(task):
    """One (cube, time chunk): read each of its files once — hashing and copying to
    the raw zone the files this task owns, parsing pixels from the same bytes straight
    into the chunk's block — then write every maximal run of consecutive cube indices
    as one region of whole frames. Returns ({path: error} for files that failed,
    {path: (sha256, size)} for the copies made)."""
    cube, _, slots, copies = task
    shape = tuple(cube.group("r").attrs["shape"])
    flux = np.empty((len(slots), *shape), np.float32)
    err = np.empty_like(flux)
    rows_of: dict[str, list[int]] = defaultdict(list)
    for j, (_, path, _) in enumerate(slots):
        rows_of[path].append(j)
    failed, stored = {}, {}
    for path, positions in rows_of.items():
        try:
            data = read_bytes(path, options_for(path, cube.store))
            if len(positions) == 1 and slots[positions[0]][2] == 0:
                j = positions[0]
                read(path, data=data, out=(flux[j:j + 1], err[j:j + 1]))
            else:
                stack = read(path, data=data)
                for j in positions:
                    flux[j], err[j] = stack.flux[slots[j][2]], stack.flux_err[slots[j][2]]
            if path in copies:  # only a file whose pixels were read reaches the raw zone
                checksum = hashlib.sha256(data).hexdigest()
                local_copy = cube.store.is_local and "://" not in path
                cube.store.put_raw(path if local_copy else data, copies[path], checksum, name=path)
                stored[path] = (checksum, len(data))
        except TessFileError as exc:
            failed[path] = exc
        except RawConflict as exc:
            failed[path] = TessFileError(path, "conflict", str(exc))
        except (OSError, ValueError) as exc:
            if is_transient(exc):
                raise
            failed[path] = TessFileError(path, "unreadable", str(exc))
    start = None
    for j, (index, path, _) in enumerate(slots + [(None, None, None)]):
        ends_run = path is None or path in failed or (start is not None and index != slots[j - 1][0] + 1)
        if start is not None and ends_run:
            cube.write(slots[start][0], flux[start:j], err[start:j])
            start = None
        if path is not None and path not in failed and start is None:
            start = j
    return failed, stored
