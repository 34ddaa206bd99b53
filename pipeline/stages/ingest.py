"""Ingest: TESS files → raw zone (originals) + staging cubes (pixels) + ``frames``.

Phases of Dask tasks, the driver deciding between them:
1. scan: every file's headers are read (no pixels);
2. verify: files whose name was seen before are hashed: same bytes → duplicate;
3. pixels: one task per (cube, time chunk) reads each of its files once, copies the
   ones it owns to the raw zone under their own names (with their sha256), and writes
   the pixels as whole chunks, so no two tasks ever write the same chunk.
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

import dask
import numpy as np
from distributed import Client, as_completed

from pipeline.cluster import map_progress
from pipeline.catalog import Catalog
from pipeline.io import StackInfo, TessFileError
from pipeline.stages.ingest_tasks import hash_file, options_for, scan, write_chunk
from pipeline.store import Cube, Store

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
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # seconds per phase

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


@dataclasses.dataclass
class IngestPlan:
    """What an ingest will do, decided on the driver from the files' headers: which
    files are accepted, where each cadence goes in its cube (the cubes are already
    extended), and one pixel task per (cube, time chunk). ``graph`` turns it into
    Dask tasks, so it can be one part of a larger graph (``pipeline.graph``)."""

    store: Store
    paths: list[str]
    reports: dict[str, FileReport]
    cubes: list[tuple[Cube, list, set]]        # (cube, [(info, rows, indices)], repaired)
    tasks: list[tuple]                         # (cube, chunk, slots, copies)
    timings: dict[str, float]
    started: float

    @property
    def cube_ids(self) -> list[str]:
        return [cube.cube_id for cube, _, _ in self.cubes]

    def pixel_tasks(self, token: str = "", progress=None) -> list:
        """One Delayed per pixel task, keyed ``ingest-pixels-<cube>-<chunk>``.
        ``progress``: a ``pipeline.cluster.StageProgress`` counting them as "ingest"."""
        token = token or dask.base.tokenize(self.paths, _time.time_ns())
        fn = (lambda: progress.task(write_chunk, "ingest")) if progress else (lambda: write_chunk)
        return [dask.delayed(fn(), pure=False)(
                    task, dask_key_name=f"ingest-pixels-{task[0].cube_id}-{task[1]}-{token}")
                for task in self.tasks]

    def graph(self, catalog: Catalog, token: str = "", progress=None):
        """The whole remaining ingest as one Delayed whose result is the IngestReport:
        the pixel tasks, then one task recording frames and failures in the catalog."""
        token = token or dask.base.tokenize(self.paths, _time.time_ns())
        record = progress.task(_record, "ingest") if progress else _record
        return dask.delayed(record, pure=False)(
            self, catalog, self.pixel_tasks(token, progress), dask_key_name=f"ingest-record-{token}")


def ingest(inputs: Iterable[str], store: Store, catalog: Catalog, client: Client,
           progress: Progress | None = None) -> IngestReport:
    """Ingest files (or folders of them): plan on the driver, then run the pixel tasks
    and the catalog record on the cluster."""
    progress = progress or (lambda stage, done, total: None)
    plan = plan_ingest(inputs, store, catalog, client, progress)
    futures = client.compute(plan.pixel_tasks())
    done = 0
    progress("pixels", 0, len(futures))
    for _ in as_completed(futures):
        done += 1
        progress("pixels", done, len(futures))
    plan.timings["pixels"] = _time.perf_counter() - plan.started - sum(plan.timings.values())
    return client.submit(_record, plan, catalog, futures, pure=False).result()


def plan_ingest(inputs: Iterable[str], store: Store, catalog: Catalog, client: Client,
                progress: Progress | None = None, before_screening=None) -> IngestPlan:
    """Scan headers (on the cluster), screen duplicates and conflicts, and place every
    accepted cadence in its cube. Rejections are recorded in the catalog here.
    ``before_screening(cube_ids)`` is called once the headers say which cubes the files
    go to, before the catalog is asked what is already ingested (a job takes the
    cubes' leases there)."""
    started = _time.perf_counter()
    paths = expand_inputs(inputs)
    reports: dict[str, FileReport] = {p: FileReport(p, "rejected", name=_name(p)) for p in paths}
    progress = progress or (lambda stage, done, total: None)
    timings: dict[str, float] = {}
    clock = started

    def lap(phase: str) -> None:
        nonlocal clock
        now = _time.perf_counter()
        timings[phase] = now - clock
        clock = now

    # 1. scan headers
    scanned: dict[str, StackInfo] = {}
    scan_jobs = [(path, options_for(path, store)) for path in paths]
    for path, result in _run(client, scan, scan_jobs, "scan", progress, key=lambda j: j[0]):
        if isinstance(result, TessFileError):
            _reject(catalog, reports[path], result.problem, str(result))
        else:
            scanned[path] = result
    lap("scan")

    if before_screening is not None:
        before_screening(sorted({info.cube_id for info in scanned.values()}))

    # 2. names seen before: same bytes → duplicate, other bytes → conflict
    suspects = _name_clashes(scanned, catalog)
    hash_jobs = [(path, options_for(path, store)) for path in suspects]
    checksums = dict(_run(client, hash_file, hash_jobs, "verify", progress, key=lambda j: j[0]))
    accepted = _screen(scanned, checksums, catalog, reports)
    lap("verify")

    # 3. place cadences in cubes; one task per (cube, time chunk) will copy its files
    #    to the raw zone and write their pixels, reading each file once
    by_cube: dict[str, list[StackInfo]] = defaultdict(list)
    for info in accepted.values():
        by_cube[info.cube_id].append(info)
    cubes = [_plan_cube(Cube(store, cube_id), infos, reports, catalog)
             for cube_id, infos in sorted(by_cube.items())]
    tasks = []
    for cube, placed, _ in cubes:
        owned: set[str] = set()
        for chunk, slots in sorted(_by_chunk(cube, placed).items()):
            slots = sorted(slots)
            mine = {p for _, p, _ in slots} - owned
            owned |= mine
            copies = {p: Store.raw_key(accepted[p].name, accepted[p].sector, accepted[p].camera,
                                       accepted[p].ccd) for p in sorted(mine)}
            tasks.append((cube, chunk, slots, copies))
    lap("plan")
    return IngestPlan(store, paths, reports, cubes, tasks, timings, started)


def _record(plan: IngestPlan, catalog: Catalog, results) -> IngestReport:
    """After the pixel tasks: frame documents for what was written, rejections (and
    the unusable-cadence flag) for what failed."""
    clock = _time.perf_counter()
    failed: dict[str, TessFileError] = {}
    stored: dict[str, tuple[str, int]] = {}
    for task_failed, task_stored in results:
        failed.update(task_failed)
        stored.update(task_stored)
    reports = plan.reports
    bytes_read = 0
    for cube, placed, repaired in plan.cubes:
        docs, bad_slots = [], []
        for info, rows, indices in placed:
            report = reports[info.path]
            if info.path in failed:
                _reject(catalog, report, failed[info.path].problem, str(failed[info.path]))
                bad_slots.extend(indices)
                continue
            checksum, size = stored[info.path]
            bytes_read += size
            docs.extend(_frame_docs(info, rows, indices, cube, checksum, size))
            report.status = "repaired" if info.path in repaired else "ingested"
            report.cube, report.cadences = cube.cube_id, len(rows)
        if bad_slots:
            cube.set_quality(bad_slots, UNUSABLE_BIT)
        catalog.upsert_frames(docs)
    cubes = {cube.cube_id: len(cube.coords()["time"]) for cube, _, _ in plan.cubes}
    timings = {**plan.timings, "catalog": _time.perf_counter() - clock}
    return IngestReport([reports[p] for p in plan.paths], cubes,
                        _time.perf_counter() - plan.started, bytes_read, timings)


# -- driver-side decisions ------------------------------------------------------------------
def _name_clashes(scanned: dict[str, StackInfo], catalog: Catalog) -> list[str]:
    """Files whose name is already ingested or appears twice in this batch: only
    their bytes can tell a harmless repeat from a different file."""
    counts: dict[str, int] = defaultdict(int)
    for info in scanned.values():
        counts[info.name] += 1
    known = catalog.ingested_files(list(counts))
    return [p for p, info in scanned.items() if info.name in known or counts[info.name] > 1]


def _screen(scanned, checksums, catalog: Catalog, reports) -> dict[str, StackInfo]:
    """Drop files already ingested (same name and bytes) and refuse different files
    that reuse an ingested name."""
    known = catalog.ingested_files({info.name for info in scanned.values()})
    accepted: dict[str, StackInfo] = {}
    first_of: dict[str, str] = {}
    for path, info in scanned.items():
        report = reports[path]
        checksum = checksums.get(path)
        if isinstance(checksum, Exception):
            _reject(catalog, report, "unreadable", f"{path}: {checksum}")
            continue
        if info.name in known or info.name in first_of:
            earlier = known.get(info.name) or checksums.get(first_of.get(info.name))
            if checksum == earlier:
                report.status, report.cube, report.cadences = "duplicate", info.cube_id, info.n_cadences
            else:
                _reject(catalog, report, "conflict",
                        f"{path}: a different file named {info.name} was already ingested")
            continue
        first_of[info.name] = path
        accepted[path] = info
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


def _run(client: Client, fn, items: list, stage: str, progress: Progress, key=lambda item: item):
    return map_progress(client, fn, items, stage, progress, key, prefix="ingest")