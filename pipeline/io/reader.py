"""``read_info`` and ``read``: open, check, detect the kind, hand over to its reader.

Every failure is a ``TessFileError`` naming the file and a category; an unexpected
exception from astropy/numpy while reading becomes ("unreadable", "<Type>: <message>"),
so one bad file never crashes a batch with an unexplained traceback. The one exception:
an object store (``s3://...``) that stays unreachable after its retries raises
``pipeline.store.StoreUnavailable`` — an outage is not a bad file.
"""

from __future__ import annotations

import os

from pipeline.io.detect import READERS, detect_kind
from pipeline.io.model import FrameStack, StackInfo, TessFileError
from pipeline.io.source import open_fits, raise_if_store_down


def read_info(path, storage_options: dict | None = None) -> StackInfo:
    """What ``path`` (local path or fsspec URL; ``.fits`` or ``.fits.gz``) holds, from
    its headers (and, for cut-outs and TPFs, the table's small columns). The pixel
    arrays of an FFI are not read; a truncated file is still detected (its size is
    checked against what the headers declare)."""
    return _guarded(path, storage_options, lambda src, reader: reader.read_info(src))


def read(path, storage_options: dict | None = None, data: bytes | None = None,
         out: tuple | None = None) -> FrameStack:
    """The file's ``StackInfo`` and its pixels: float32 (n, rows, cols) flux and
    flux_err in e-/s, science region only. ``storage_options``: fsspec options for a
    URL (e.g. ``Settings.storage_options`` for the S3 store). ``data``: the file's
    bytes when the caller already holds them (``path`` then only names the file).
    ``out``: (flux, flux_err) arrays of shape (1, rows, cols) for an FFI's pixels to be
    written into (other kinds ignore it and allocate)."""
    def load(src, reader):
        info, flux, flux_err = reader.read(src, out) if out is not None and reader is READERS["ffi"] \
            else reader.read(src)
        return FrameStack(info, flux, flux_err)
    return _guarded(path, storage_options, load, data)


def _guarded(path, storage_options, action, data=None):
    name = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    try:
        with open_fits(path, storage_options, data) as src:
            return action(src, READERS[detect_kind(src)])
    except TessFileError:
        raise
    except MemoryError:
        raise
    except Exception as exc:
        raise_if_store_down(name, exc)
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise TessFileError(name, "unreadable",
                            f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__) from exc
