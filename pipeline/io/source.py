"""Opening a TESS file wherever it lives, and checking its FITS structure cheaply.

``open_fits(path)`` accepts a local path (str or ``os.PathLike``) or any fsspec URL
("file://...", "s3://bucket/raw/..."). The kind of compression is told from the
content, not the name: a gzip stream (``.fits.gz``) is decompressed into memory
(a truncated stream is reported as "truncated"); a plain file is handed to astropy
as an fsspec file object, so only the bytes astropy asks for are read.

Before astropy parses anything, ``scan_structure`` walks the headers block by block
(2880-byte FITS blocks) and checks that every HDU's data, as its header declares it
(``|BITPIX|/8 * GCOUNT * (PCOUNT + NAXIS1*...*NAXISn)``), is really in the file, and
that whatever follows an HDU is another HDU (or blank padding), not a corrupt header.
astropy on its own only *warns* about a short file and pads the data with zeros, so
this explicit check is what turns a cut download into a "truncated" error — for
``read_info`` as well as ``read``, and without reading any pixel data (plain files:
the size comes from a seek to the end).
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import os
import zlib
from contextlib import contextmanager
from typing import IO, Iterator

import fsspec
from astropy.io import fits

from pipeline.io.model import TessFileError

BLOCK = 2880
CARD = 80
MAX_HEADER_BLOCKS = 10_000      # 28.8 MB of header: beyond that it is not a real header
MAX_HDUS = 1_000


@dataclasses.dataclass
class HduLayout:
    """Where one HDU sits in the file, from its header alone."""

    index: int
    header_offset: int
    data_offset: int
    data_size: int            # declared bytes, without the padding to a whole block
    xtension: str | None      # None for the primary HDU
    naxis: tuple[int, ...]    # NAXIS1..NAXISn as written (FITS order: fastest first)


@dataclasses.dataclass
class Source:
    """An opened file: what the readers get."""

    path: str                 # as given by the caller
    name: str                 # the file's own name (last part of the path or URL)
    hdul: fits.HDUList
    layout: list[HduLayout]
    compressed: bool
    buffer: bytes | None = None  # the whole (uncompressed) file, when the caller read it


def file_name(path) -> str:
    text = os.fspath(path) if not isinstance(path, str) else path
    text = text.split("?", 1)[0].rstrip("/")
    return text.rsplit("/", 1)[-1]


@contextmanager
def open_fits(path, storage_options: dict | None = None,
              data: bytes | None = None) -> Iterator[Source]:
    """Open ``path`` (local path or fsspec URL; ``storage_options`` go to fsspec, e.g.
    an S3 endpoint and keys) — or, when ``data`` holds the file's bytes already read
    into memory, parse those and use ``path`` only as the name — check its structure,
    and yield a
    ``Source`` whose ``hdul`` was opened lazily (headers on demand, data only when
    ``.data`` is touched). Raises ``TessFileError`` for a missing file, a non-FITS file
    ("not TESS"), a cut file ("truncated")."""
    spath = os.fspath(path)
    try:
        raw = io.BytesIO(data) if data is not None else \
            fsspec.open(spath, "rb", **(storage_options or {})).open()
    except FileNotFoundError as exc:
        raise TessFileError(spath, "unreadable", f"no such file ({exc})") from None
    except Exception as exc:  # bad URL, unknown protocol, permission, network
        raise_if_store_down(spath, exc)
        raise TessFileError(spath, "unreadable", f"cannot open: {type(exc).__name__}: {exc}") from None
    try:
        magic = raw.read(2)
        raw.seek(0)
        compressed = magic == b"\x1f\x8b"
        fobj: IO[bytes] = _gunzip(spath, raw) if compressed else raw
        layout = scan_structure(spath, fobj)
        fobj.seek(0)
        try:
            hdul = fits.open(fobj, mode="readonly", memmap=False, lazy_load_hdus=True,
                             cache=False)
        except TessFileError:
            raise
        except Exception as exc:
            raise TessFileError(spath, "unreadable", f"astropy cannot open it: "
                                f"{type(exc).__name__}: {exc}") from None
        try:
            _read_every_hdu(spath, hdul, len(layout))
            buffer = data if data is not None and not compressed else None
            yield Source(spath, file_name(spath), hdul, layout, compressed, buffer)
        finally:
            hdul.close()
    finally:
        raw.close()


def _read_every_hdu(path: str, hdul, expected: int) -> None:
    """Let astropy find the HDUs now, but no more than the structure scan found: on
    some corrupt headers astropy reads the same bytes as HDU after HDU without end
    (a fuzzed 43-KB file gave > 20,000 HDUs), and ``len(hdul)`` would never return."""
    for index in range(expected + 1):
        try:
            hdul[index]
        except IndexError:
            return                              # the end of the file: every HDU read
        except Exception as exc:  # noqa: BLE001 - the HDU's header is broken; its reader says how
            if index >= expected:
                raise TessFileError(path, "unreadable", f"astropy reads HDU {index} past the "
                                    f"{expected} the headers declare: {type(exc).__name__}: {exc}") from None
            return
    raise TessFileError(path, "unreadable", f"astropy finds more HDUs than the {expected} the "
                        "headers declare (a corrupt header)")


def raise_if_store_down(path: str, exc: Exception) -> None:
    """An object store that is down (after its retries) is not a bad file: raise
    ``pipeline.store.StoreUnavailable`` instead of a TessFileError, so the caller fails
    the run rather than rejecting the file."""
    from pipeline.store.retry import StoreUnavailable, is_transient  # only on failure
    if isinstance(exc, StoreUnavailable):
        raise exc
    if "://" in path and is_transient(exc):
        store = "/".join(path.split("/", 3)[:3])
        raise StoreUnavailable(store, path, "reading", f"{type(exc).__name__}: {exc}") from exc


def _gunzip(path: str, raw) -> io.BytesIO:
    try:
        with gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            return io.BytesIO(gz.read())
    except EOFError as exc:
        raise TessFileError(path, "truncated", f"the gzip stream ends early ({exc})") from None
    except (OSError, zlib.error) as exc:
        raise TessFileError(path, "unreadable", f"corrupt gzip stream: {exc}") from None


def _size(fobj) -> int:
    here = fobj.tell()
    fobj.seek(0, os.SEEK_END)
    size = fobj.tell()
    fobj.seek(here)
    return size


def scan_structure(path: str, fobj) -> list[HduLayout]:
    """Walk the HDUs of a FITS stream from its headers alone and check each HDU's
    declared data is present. Leaves the stream position undefined."""
    size = _size(fobj)
    fobj.seek(0)
    first = fobj.read(CARD)
    if not first.startswith(b"SIMPLE  =") or first[10:30].strip() != b"T":
        what = "an empty file" if not first else "not a FITS file (no SIMPLE = T card)"
        raise TessFileError(path, "not TESS", what)
    layout: list[HduLayout] = []
    offset = 0
    while offset < size and len(layout) < MAX_HDUS:
        fobj.seek(offset)
        cards, header_end = _read_header(path, fobj, offset, size, len(layout))
        if cards is None:  # trailing padding (zeros or blanks) after the last HDU: ignored
            break
        hdu = _layout(path, len(layout), offset, header_end, cards)
        if hdu.data_offset + hdu.data_size > size:
            raise TessFileError(
                path, "truncated",
                f"HDU {hdu.index} declares {hdu.data_size} bytes of data from byte "
                f"{hdu.data_offset} but the file ends at byte {size} "
                f"({hdu.data_offset + hdu.data_size - size} bytes missing)")
        layout.append(hdu)
        offset = hdu.data_offset + _padded(hdu.data_size)
    return layout


def _padded(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _read_header(path, fobj, offset, size, index):
    """Cards of the header starting at ``offset`` → (dict of the cards that matter,
    offset just past the header), or (None, None) if no HDU starts there."""
    cards: dict[str, str] = {}
    for block_no in range(MAX_HEADER_BLOCKS):
        block = fobj.read(BLOCK)
        if block_no == 0 and index > 0 and not block.startswith(b"XTENSION="):
            if not block.strip(b"\0 "):
                return None, None
            # astropy would silently drop everything from here on (a corrupt extension
            # header would make an FFI look like a raw one, or lose a TPF's tables)
            raise TessFileError(path, "unreadable",
                                f"the {size - offset} bytes from byte {offset} (after HDU "
                                f"{index - 1}) do not start with an XTENSION card: a "
                                f"corrupt extension header or trailing junk")
        if len(block) < BLOCK:
            got = offset + block_no * BLOCK + len(block)
            raise TessFileError(path, "truncated",
                                f"the header of HDU {index} (from byte {offset}) is cut at "
                                f"byte {got} before its END card")
        for i in range(0, BLOCK, CARD):
            card = block[i:i + CARD]
            key = card[:8].decode("ascii", "replace").strip()
            if key == "END":
                return cards, offset + (block_no + 1) * BLOCK
            if card[8:10] == b"= " and key not in cards:
                cards[key] = card[10:].decode("ascii", "replace")
    raise TessFileError(path, "unreadable", f"the header of HDU {index} has no END card "
                        f"within {MAX_HEADER_BLOCKS} blocks")


def _card_int(path, index, cards, key, default=None) -> int:
    text = cards.get(key)
    if text is None:
        if default is None:
            raise TessFileError(path, "unreadable", f"HDU {index} header lacks {key}")
        return default
    value = text.split("/", 1)[0].strip()
    try:
        return int(value)
    except ValueError:
        raise TessFileError(path, "unreadable",
                            f"HDU {index} header: {key} = {value!r} is not an integer") from None


def _layout(path, index, offset, header_end, cards) -> HduLayout:
    bitpix = _card_int(path, index, cards, "BITPIX")
    naxis = _card_int(path, index, cards, "NAXIS")
    if naxis < 0 or naxis > 999 or bitpix not in (8, 16, 32, 64, -32, -64):
        raise TessFileError(path, "unreadable",
                            f"HDU {index} header: BITPIX = {bitpix}, NAXIS = {naxis}")
    axes = tuple(_card_int(path, index, cards, f"NAXIS{i}") for i in range(1, naxis + 1))
    if any(a < 0 for a in axes):
        raise TessFileError(path, "unreadable", f"HDU {index} header: negative axis in {axes}")
    pcount = _card_int(path, index, cards, "PCOUNT", 0)
    gcount = _card_int(path, index, cards, "GCOUNT", 1)
    xtension = cards.get("XTENSION")
    if xtension is not None:
        xtension = xtension.split("/", 1)[0].strip().strip("'").strip()
    count = 0
    if naxis:
        count = 1
        for a in axes:
            count *= a
        if index == 0 and axes[0] == 0:  # random groups: NAXIS1 = 0
            count = 1
            for a in axes[1:]:
                count *= a
    data_size = abs(bitpix) // 8 * gcount * (pcount + count) if naxis else 0
    return HduLayout(index, offset, header_end, data_size, xtension, axes)
