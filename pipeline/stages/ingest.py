"""Ingest: TESS files → raw zone (originals) + staging cubes (pixels) + ``frames``.

Three phases of Dask tasks, the driver deciding between them:
1. scan: every file's headers are read and checksummed (no pixels);
2. raw: accepted files are copied to the raw zone under their own names;
3. pixels: one task per (cube, time chunk) reads its files and writes whole chunks,
   so no two tasks ever write the same chunk.
Frame documents are upserted once the pixels are in. A bad file is reported and
recorded in the catalog; it never stops the others. Running the same files again is
a no-op, and a run that died half-way is repaired, not duplicated: the cube's own
``cadenceno`` says which cadences it already holds.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import os
import time as _time
from collections import defaultdict
from typing import Callable, Iterable

import numpy as np
from distributed import Client, as_completed
from fsspec.core import url_to_fs

from pipeline.catalog import Catalog
from pipeline.io import StackInfo, TessFileError, read, read_info
from pipeline.store import Cube, RawConflict, Store, file_checksum

FITS_PATTERNS = ("*.fits", "*.fits.gz", "*.fit", "*.fts")
# A cadence whose pixels turned out unusable after its slot in the cube was made is
# kept (cubes never shrink) but flagged "manual exclude" so no stage uses it.
UNUSABLE_BIT = 128

Progress = Callable[[str, int, int], None]


@dataclasses.dataclass
class FileReport:
    path: str
    status: str                     # "ingested" | "duplicate" | "repaired" | "rejected"
    name: str = ""
    cube: str | None = None
    cadences: int = 0
    problem: str | None = None
    error: str | None = None


@dataclasses.dataclass
class IngestReport:
    files: list[FileReport]
    cubes: dict[str, int]           # cube id → cadences it holds after the run
    seconds: float = 0.0
    bytes_read: int = 0

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.files)

    @property
    def rejected(self) -> list[FileReport]:
        return [f for f in self.files if f.status == "rejected"]

    def __repr__(self) -> str:
        counts = ", ".join(f"{s} {self.count(s)}" for s in
                           ("ingested", "repaired", "duplicate", "rejected") if self.count(s))
        return f"<IngestReport {len(self.files)} files ({counts or 'none'}) in {self.seconds:.1f} s>"


def expand_inputs(inputs: Iterable[str]) -> list[str]:
    """Files named, and FITS files inside named folders, in a stable order."""
    out: list[str] = []
    for item in inputs:
        item = os.fspath(item)
        if "://" not in item and os.path.isdir(item):
            found = {p for pattern in FITS_PATTERNS for p in glob.glob(os.path.join(item, pattern))}
            out.extend(sorted(found))
        else:
            out.append(item)
    return list(dict.fromkeys(out))


def ingest(inputs: Iterable[str], store: Store, catalog: Catalog, client: Client,
           progress: Progress | None = None) -> IngestReport:
    started = _time.perf_counter()
    paths = expand_inputs(inputs)
    reports: dict[str, FileReport] = {p: FileReport(p, "rejected", name=_name(p)) for p in paths}
    progress = progress or (lambda stage, done, total: None)

    # 1. scan
    scanned: dict[str, tuple[StackInfo, str, int]] = {}
    scan_jobs = [(path, _options_for(path, store)) for path in paths]
    for path, result in _run(client, _scan, scan_jobs, "scan", progress, key=lambda j: j[0]):
        if isinstance(result, TessFileError):
            _reject(catalog, reports[path], result.problem, str(result))
        else:
            scanned[path] = result

    accepted = _screen(scanned, catalog, reports)

    # 2. raw zone
    raw_jobs = [(path, info.path, store, Store.raw_key(info.name, info.sector, info.camera, info.ccd),
                 checksum) for path, (info, checksum, _) in accepted.items()]
    for path, result in _run(client, _upload, raw_jobs, "raw", progress, key=lambda j: j[0]):
        if isinstance(result, Exception):
            problem = "conflict" if isinstance(result, RawConflict) else "upload failed"
            _reject(catalog, reports[path], problem, str(result))
            accepted.pop(path)

    # 3. pixels
    by_cube: dict[str, list[str]] = defaultdict(list)
    for path, (info, _, _) in accepted.items():
        by_cube[info.cube_id].append(path)
    plans = [_plan_cube(Cube(store, cube_id), [accepted[p][0] for p in members], reports, catalog)
             for cube_id, members in sorted(by_cube.items())]
    tasks = [(cube, chunk, sorted(slots), store.storage_options) for cube, placed, _ in plans
             for chunk, slots in sorted(_by_chunk(cube, placed).items())]
    failed: dict[str, TessFileError] = {}
    for _, result in _run(client, _write_chunk, tasks, "pixels", progress,
                          key=lambda t: (t[0].cube_id, t[1])):
        failed.update(result)

    # 4. catalog
    bytes_read = 0
    for cube, placed, repaired in plans:
        docs = []
        bad_slots = []
        for info, rows, indices in placed:
            report = reports[info.path]
            if info.path in failed:
                _reject(catalog, report, failed[info.path].problem, str(failed[info.path]))
                bad_slots.extend(indices)
                continue
            _, checksum, size = accepted[info.path]
            bytes_read += size
            docs.extend(_frame_docs(info, rows, indices, cube, checksum, size))
            report.status = "repaired" if info.path in repaired else "ingested"
            report.cube, report.cadences = cube.cube_id, len(rows)
        if bad_slots:
            cube.set_quality(bad_slots, UNUSABLE_BIT)
        catalog.upsert_frames(docs)
    cubes = {cube.cube_id: len(cube.coords()["time"]) for cube, _, _ in plans}
    return IngestReport([reports[p] for p in paths], cubes, _time.perf_counter() - started, bytes_read)


# -- driver-side decisions ------------------------------------------------------------------
def _screen(scanned, catalog: Catalog, reports) -> dict:
    """Drop files already ingested (same name and checksum: duplicates) and refuse
    different files reusing an ingested name."""
    known = catalog.ingested_files({info.name for info, _, _ in scanned.values()})
    accepted, seen = {}, {}
    for path, (info, checksum, size) in scanned.items():
        report = reports[path]
        if info.name in seen and seen[info.name] == checksum or known.get(info.name) == checksum:
            report.status, report.cube, report.cadences = "duplicate", info.cube_id, info.n_cadences
        elif info.name in seen or info.name in known:
            _reject(catalog, report, "conflict",
                    f"{path}: a different file named {info.name} was already ingested")
        else:
            seen[info.name] = checksum
            accepted[path] = (info, checksum, size)
    return accepted


def _plan_cube(cube: Cube, infos: list[StackInfo], reports, catalog):
    """Give every cadence of ``infos`` its cube index. Cadences the cube already holds
    keep theirs (a repair of a run that died before its catalog write); new ones are
    appended in time order. Returns (cube, [(info, stack rows, cube indices)], repaired)."""
    first = infos[0]
    if not cube.exists():
        cube.create(first.shape, {"sector": first.sector, "camera": first.camera,
                                  "ccd": first.ccd, "kind": first.kind,
                                  "origin": _origin(first), "shape": list(first.shape)})
    shape = tuple(cube.group("r").attrs["shape"])
    coords = cube.coords()
    present = {int(c): i for i, c in enumerate(coords["cadenceno"])}
    last_time = coords["time"][-1] if len(coords["time"]) else -np.inf

    placed, repaired, new = [], set(), []
    claimed: dict[int, str] = {}
    for info in sorted(infos, key=lambda i: (float(i.time[0]), i.name)):
        report = reports[info.path]
        if tuple(info.shape) != shape:
            _reject(catalog, report, "wrong shape", f"{info.path}: wrong shape: frames are "
                    f"{info.shape[0]}x{info.shape[1]} but cube {cube.cube_id} holds {shape[0]}x{shape[1]}")
            continue
        cadences = [int(c) for c in info.cadenceno]
        clash = [c for c in cadences if c in claimed]
        if clash:
            _reject(catalog, report, "duplicate cadence", f"{info.path}: cadence {clash[0]} "
                    f"is also in {claimed[clash[0]]}")
            continue
        fresh = [k for k, c in enumerate(cadences) if c not in present]
        if fresh and float(np.min(info.time[fresh])) <= last_time:
            _reject(catalog, report, "out of order", f"{info.path}: cadence at BTJD "
                    f"{float(np.min(info.time[fresh])):.5f} is earlier than the last cadence of "
                    f"cube {cube.cube_id} ({last_time:.5f}); cubes only grow forward in time")
            continue
        claimed.update({c: info.name for c in cadences})
        old = [k for k in range(len(cadences)) if k not in set(fresh)]
        if old:
            placed.append((info, old, [present[cadences[k]] for k in old]))
            repaired.add(info.path)
        new.extend((float(info.time[k]), info, k) for k in fresh)

    new.sort(key=lambda item: item[0])
    if new:
        start = cube.extend([t for t, _, _ in new], [int(i.cadenceno[k]) for _, i, k in new],
                            [int(i.quality[k]) for _, i, k in new])
        rows_of: dict[str, tuple[StackInfo, list, list]] = {}
        for offset, (_, info, k) in enumerate(new):
            entry = rows_of.setdefault(info.path, (info, [], []))
            entry[1].append(k)
            entry[2].append(start + offset)
        placed.extend(rows_of.values())
    return cube, placed, repaired


def _by_chunk(cube: Cube, placed) -> dict[int, list]:
    depth = cube.time_chunk
    slots: dict[int, list] = defaultdict(list)
    for info, rows, indices in placed:
        for row, index in zip(rows, indices):
            slots[index // depth].append((index, info.path, row))
    return slots


def _frame_docs(info: StackInfo, rows, indices, cube: Cube, checksum: str, size: int) -> list[dict]:
    """One document per cadence. A cut-out's or TPF's header cards belong to the file,
    not to each of its (often >1000) cadences: they are stored once, on the document of
    the file's first cadence, and the others point at it with ``headers_cadenceno``."""
    headers = info.header_cards()
    first = int(info.cadenceno[0])
    wcs = info.wcs.to_header(relax=True).tostring(sep="\n") if info.wcs is not None else None
    raw_key = Store.raw_key(info.name, info.sector, info.camera, info.ccd)
    now = dt.datetime.now(dt.timezone.utc)
    return [{
        "file": info.name, "cadenceno": int(info.cadenceno[k]), "kind": info.kind,
        "ffi_file": info.ffi_files[k] if k < len(info.ffi_files) else info.name,
        "sector": info.sector, "camera": info.camera, "ccd": info.ccd,
        "time": float(info.time[k]), "tstart": float(info.tstart[k]), "tstop": float(info.tstop[k]),
        "date_obs": info.date_obs, "quality": int(info.quality[k]),
        "raw_key": raw_key, "cube": cube.cube_id, "cube_index": int(index),
        "shape": list(info.shape), "origin": _origin(info),
        "checksum": checksum, "size": size, "wcs": wcs, "headers_cadenceno": first,
        "headers": headers if int(info.cadenceno[k]) == first else None,
        "notes": list(getattr(info, "notes", [])) if int(info.cadenceno[k]) == first else [],
        "status": "ingested", "ingested_at": now,
    } for k, index in zip(rows, indices)]


def _origin(info: StackInfo) -> list[int] | None:
    """Where the stack sits on the CCD; None when the file does not say (a reader note)."""
    return [int(v) for v in info.origin] if info.origin is not None else None


def _reject(catalog: Catalog, report: FileReport, problem: str, error: str) -> None:
    report.status, report.problem, report.error = "rejected", problem, error
    catalog.record_rejection(report.name, problem, error, stage="ingest", path=report.path)


def _name(path: str) -> str:
    return os.path.basename(path.rstrip("/"))


# -- tasks (run on workers) -----------------------------------------------------------------
def _options_for(path: str, store: Store) -> dict:
    """Inputs in the store's own object store (e.g. files injected into its raw zone)
    are read with the store's credentials; local paths need none."""
    return store.storage_options if path.startswith(f"{store.protocol}://") else {}


def _scan(job):
    path, options = job
    try:
        info = read_info(path, storage_options=options)
        return info, _checksum(path, options), _size(path, options)
    except TessFileError as exc:
        return exc
    except (OSError, ValueError) as exc:
        return TessFileError(path, "unreadable", str(exc))


def _upload(job):
    _, source, store, key, checksum = job
    try:
        return store.put_raw(source, key, checksum, _options_for(source, store))
    except Exception as exc:  # reported per file; one failed copy must not stop the run
        return exc


def _write_chunk(task) -> dict[str, TessFileError]:
    """Read the files of one (cube, time chunk) and write its pixels: every maximal run
    of consecutive cube indices is one region write of whole frames."""
    cube, _, slots, options = task
    stacks, failed = {}, {}
    for path in dict.fromkeys(p for _, p, _ in slots):
        try:
            stacks[path] = read(path, storage_options=options if "://" in path else None)
        except TessFileError as exc:
            failed[path] = exc
        except (OSError, ValueError) as exc:
            failed[path] = TessFileError(path, "unreadable", str(exc))
    good = [(i, p, r) for i, p, r in slots if p in stacks]
    run: list = []
    for slot in good + [None]:
        if run and (slot is None or slot[0] != run[-1][0] + 1):
            flux = np.stack([stacks[p].flux[r] for _, p, r in run])
            err = np.stack([stacks[p].flux_err[r] for _, p, r in run])
            cube.write(run[0][0], flux, err)
            run = []
        if slot is not None:
            run.append(slot)
    return failed


def _size(path: str, options: dict) -> int:
    if "://" not in path:
        return os.path.getsize(path)
    fs, p = url_to_fs(path, **options)
    return int(fs.size(p))


def _checksum(path: str, options: dict) -> str:
    if "://" not in path:
        return file_checksum(path)
    fs, p = url_to_fs(path, **options)
    return file_checksum(p, fs)


def _run(client: Client, fn, items: list, stage: str, progress: Progress, key=lambda item: item):
    """Run ``fn`` over ``items`` on the cluster; yield (key, result) as tasks finish."""
    if not items:
        return
    futures = client.map(fn, items, pure=False, key=[f"{stage}-{i}-{os.getpid()}-{_time.time_ns()}"
                                                      for i in range(len(items))])
    keys = {f.key: key(item) for f, item in zip(futures, items)}
    done = 0
    progress(stage, 0, len(items))
    for future in as_completed(futures):
        result = future.result()
        done += 1
        progress(stage, done, len(items))
        yield keys[future.key], result
