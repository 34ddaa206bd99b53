"""Streaming multipart uploads: each file part goes to a temporary file on disk as it
arrives (hashed on the way), never whole in memory, and stops at a per-file limit.

``parse_uploads(request, folder, max_bytes, on_file)`` feeds the request body to
python-multipart's push parser; when a file part ends, ``await on_file(upload)`` is
called at once, so the caller can validate and store it and delete the temporary
file before the next one arrives (disk use: one file at a time)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import tempfile
from typing import Awaitable, Callable

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")
FIELD = "files"
MAX_FILES = 1000
DRAIN_LIMIT = 64 << 20      # after a 413, read (and discard) at most this much more


class UploadError(ValueError):
    """A malformed upload: HTTP ``status`` with a message."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


@dataclasses.dataclass
class Upload:
    name: str                  # the file name the client gave (not yet checked)
    path: str                  # the temporary file holding its bytes, alone in its folder
    size: int = 0
    sha256: str = ""


def _local_name(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    return base if _SAFE.match(base) and ".." not in base else "upload.bin"


class _Part:
    def __init__(self):
        self.headers: dict[bytes, bytes] = {}
        self.field = ""
        self.upload: Upload | None = None
        self.file = None
        self.digest = None


class _Receiver:
    """python-multipart callbacks writing file parts to disk."""

    def __init__(self, folder: str, max_bytes: int):
        self.folder = folder
        self.max_bytes = max_bytes
        self.part = _Part()
        self.header_name = b""
        self.header_value = b""
        self.finished: list[Upload] = []
        self.n_files = 0
        self.other_fields: list[str] = []

    def on_part_begin(self):
        self.part = _Part()

    def on_header_field(self, data, start, end):
        self.header_name += data[start:end]

    def on_header_value(self, data, start, end):
        self.header_value += data[start:end]

    def on_header_end(self):
        self.part.headers[self.header_name.lower()] = self.header_value
        self.header_name = self.header_value = b""

    def on_headers_finished(self):
        _, options = parse_options_header(self.part.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise UploadError(422, "a multipart part has no name (Content-Disposition: form-data; name=...)")
        self.part.field = options[b"name"].decode("utf-8", "replace")
        if b"filename" not in options:
            self.other_fields.append(self.part.field)
            return
        if self.part.field != FIELD:
            raise UploadError(422, f"files must be sent in the multipart field {FIELD!r}, "
                                   f"not {self.part.field[:50]!r}")
        self.n_files += 1
        if self.n_files > MAX_FILES:
            raise UploadError(413, f"too many files in one request (at most {MAX_FILES})")
        name = options[b"filename"].decode("utf-8", "replace")
        # under its own name (the readers look at it), in a folder of its own
        path = os.path.join(tempfile.mkdtemp(dir=self.folder), _local_name(name))
        self.part.file = open(path, "wb")
        self.part.digest = hashlib.sha256()
        self.part.upload = Upload(name=name, path=path)

    def on_part_data(self, data, start, end):
        part = self.part
        if part.upload is None:
            return                   # a plain form field: ignored (its name is reported)
        chunk = data[start:end]
        part.upload.size += len(chunk)
        if part.upload.size > self.max_bytes:
            raise UploadError(413, f"{part.upload.name[:100]!r} is larger than the limit of "
                                   f"{self.max_bytes} bytes per file")
        part.digest.update(chunk)
        part.file.write(chunk)

    def on_part_end(self):
        part = self.part
        if part.upload is not None:
            part.file.close()
            part.upload.sha256 = part.digest.hexdigest()
            self.finished.append(part.upload)
        self.part = _Part()

    def close(self):
        if self.part.file is not None and not self.part.file.closed:
            self.part.file.close()

    def callbacks(self) -> dict:
        return {name: getattr(self, name) for name in (
            "on_part_begin", "on_header_field", "on_header_value", "on_header_end",
            "on_headers_finished", "on_part_data", "on_part_end")}


async def _drain(request: Request) -> None:
    """Read what the client still sends (up to a limit), so it gets to read our 413."""
    read = 0
    try:
        async for chunk in request.stream():
            read += len(chunk)
            if read > DRAIN_LIMIT:
                break
    except ClientDisconnect:
        pass


async def parse_uploads(request: Request, folder: str, max_bytes: int,
                        on_file: Callable[[Upload], Awaitable[None]]) -> int:
    """Stream the request's file parts to ``folder``, calling ``on_file`` for each as
    it completes. Returns the number of files. UploadError for a bad body."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data":
        raise UploadError(415, f"send the files as multipart/form-data (field {FIELD!r}), "
                               f"not {ctype.decode('latin-1')[:60] or 'no content type'}")
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError(422, "multipart/form-data without a boundary")
    receiver = _Receiver(folder, max_bytes)
    try:
        parser = MultipartParser(boundary, receiver.callbacks())
    except ValueError as exc:
        raise UploadError(422, f"invalid multipart boundary: {exc}") from None
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            while receiver.finished:
                await on_file(receiver.finished.pop(0))
        parser.finalize()
        while receiver.finished:
            await on_file(receiver.finished.pop(0))
    except UploadError as exc:
        receiver.close()
        if exc.status == 413:
            await _drain(request)
        raise
    except ClientDisconnect:
        receiver.close()
        raise UploadError(400, "the client went away before the upload was complete") from None
    except Exception as exc:  # noqa: BLE001 - python-multipart's parse errors
        receiver.close()
        if type(exc).__module__.startswith("python_multipart"):
            raise UploadError(422, f"invalid multipart body: {exc}") from None
        raise
    finally:
        receiver.close()
    if receiver.n_files == 0:
        extra = f" (got only the fields {', '.join(sorted(set(receiver.other_fields)))[:100]})" \
            if receiver.other_fields else ""
        raise UploadError(422, f"no file in the multipart field {FIELD!r}{extra}")
    return receiver.n_files
