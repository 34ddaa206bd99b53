"""Background stage: sky background and corner glow of every cadence of a cube, pixel
flags and the sum image (DESIGN §4), as Dask tasks per time chunk.

What the cube holds afterwards (same zarr group as ``flux``):

* ``background`` float32 (time, row, col): the time-smoothed background in e-/s.
  The cube stays the single source of pixels: ``flux`` is kept raw and the corrected
  flux is ``flux − background`` (``corrected_flux(cube)`` reads it lazily, manual
  excludes as NaN). Storing a second full-size ``corrected`` cube would double the
  bytes for a subtraction any reader does for free. ``background`` is stored without
  compression: a smooth float32 image only shrinks to ~70 % with zstd, and writing it
  compressed costs more than the fit.
* ``pixel_flags`` uint8 (time, row, col): 1 not used for the background (non-finite,
  > 8e4 e-/s, < 0, manually excluded), 2 manual exclude, 4 background shenanigans.
* ``sumimage`` float32 (row, col): mean of the corrected frames of good quality
  (``quality & 4271 == 0``, TESS's default bitmask); other frames are processed like
  any other but left out of it.
* ``bkg_mesh`` (time, tile_row, tile_col) and ``bkg_radial`` (time, radius) float32:
  each frame's background model before time smoothing (the filtered tile grid and the
  radial table; see ``kernels.background``), from which any background is rebuilt.
* group attribute ``background``: method parameters, window, cadence, boresight,
  manual-exclude list, counts.

Phases (each a ``client.map`` over time chunks, every task reading and writing whole
zarr chunks of its own):

1. fit — read flux, mask it (flag bits 1/2), fit each frame's model, write
   ``bkg_mesh`` and ``bkg_radial``; for good frames, sum the flux entering the sum image.
   The sum image then needs no pass over the pixels: the smoothed background is
   linear in the smoothed model, so Σ background over the good frames is the
   background of the summed models (the driver renders one image; the rare pixels
   left out of the flux sum — manual excludes, non-finite flux — are taken back out
   frame by frame).
2. background — read the models of the chunk's frames ± w (the halo: a map_overlap of
   depth w = N//2 along time, over 6-KB models instead of 16-MB images, so a 27-frame
   window at 200 s costs nothing), average them over the window — the mean of the
   images, as both model parts enter the image linearly — render and write the
   chunk's backgrounds; read flux, write flag bits 1/2, and compute each frame's
   shenanigans indicator, the 15×15 median of (flux − background − sum image). Its
   norm per pixel is TASOC's mean of block medians, over blocks of ~25 frames (whole
   time chunks spread evenly over the cube; TASOC averages over every 25-frame random
   block, which needs every indicator twice — the norm of a 40 e-/s threshold does not).
   Those chunks run first and keep their indicators (int16, 1/8 e-/s, uncompressed
   scratch); every other chunk then sets bit 4 in the same task.
3. flags — bit 4 for the sampled chunks, from their stored indicators.

Flux is read twice, background and flags written once (a few sampled chunks twice).
Memory per task is a few time chunks of frames whatever the length of the series; the
driver holds two images of accumulators.
"""

from __future__ import annotations

import dataclasses
import functools
import time as _time
from typing import Callable, Iterable

import numpy as np
from distributed import Client

from kernels import background as kbg
from kernels import flags as kflags
from kernels import smoothing as ksmooth
from pipeline.cluster import map_progress
from pipeline.camera import ManualExclude, as_excludes, boresight, frame_rects
from pipeline.store import Cube, Store

GOOD_QUALITY_MASK = 4271      # 1|2|4|8|32|64|128|4096: frames with these bits are "bad"
OUTPUTS = ("background", "pixel_flags", "sumimage", "bkg_mesh", "bkg_radial")
_INDICATOR = "_bkg_shenanigans"

Progress = Callable[[str, int, int], None]


@dataclasses.dataclass
class BackgroundReport:
    cube_id: str
    frames: int
    chunks: int
    cadence: float                  # s
    window: int                     # frames in the smoothing window
    frames_with_radial: int
    frames_in_sum: int
    frames_failed: int              # no background could be fitted (all masked)
    shenanigans: int                # flagged pixel-frames (bit 4)
    excluded: int                   # manually excluded pixel-frames (bit 2)
    seconds: dict                   # wall-clock seconds per phase
    task_seconds: dict = dataclasses.field(default_factory=dict)  # Σ tasks: "io", "compute"

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))

    def __repr__(self) -> str:
        return (f"<BackgroundReport {self.cube_id}: {self.frames} frames in {self.chunks} chunks, "
                f"window {self.window} @ {self.cadence:.0f} s, radial term in "
                f"{self.frames_with_radial}, sum image of {self.frames_in_sum}, "
                f"{self.shenanigans} shenanigans pixel-frames, {self.total_seconds:.1f} s>")


def run_background(store: Store, cube_id: str, client: Client, progress: Progress | None = None,
                   exclude: Iterable[ManualExclude | dict] | None = None) -> BackgroundReport:
    """Estimate and store the background, pixel flags and sum image of a cube.

    ``exclude``: manual-exclude regions (``pipeline.camera.ManualExclude`` or dicts);
    None: the default list (empty). Re-running replaces every output. ``progress``
    is called as progress(phase, done, total) for the phases "fit", "background"
    and "flags".
    """
    progress = progress or (lambda stage, done, total: None)
    excludes = as_excludes(exclude)
    cube = Cube(store, cube_id)
    if not cube.exists():
        raise FileNotFoundError(f"no cube {cube_id} in {store.url}")
    group = cube.group()
    attrs = dict(group.attrs)
    n, h, w = group["flux"].shape
    depth = group["flux"].chunks[0]
    coords = cube.coords()
    times, quality = coords["time"], coords["quality"]
    plan = _Plan(
        cube=cube, shape=(h, w), origin=tuple(int(v) for v in attrs.get("origin", (0, 0))),
        boresight=boresight(attrs.get("camera"), attrs.get("ccd")),
        sector=attrs.get("sector"), camera=attrs.get("camera"), ccd=attrs.get("ccd"),
        excludes=excludes)
    geom = plan.geometry()
    cadence = ksmooth.cadence_seconds(times)
    window = ksmooth.window_frames(cadence)
    half = window // 2
    seg = ksmooth.segments(times, cadence)
    good = (quality.astype(np.int64) & GOOD_QUALITY_MASK) == 0
    _create_outputs(group, n, (h, w), group["flux"].chunks, geom)
    chunks = [(t0, min(t0 + depth, n)) for t0 in range(0, n, depth)]
    seconds: dict[str, float] = {}

    # 1. fit: models, flags 1/2, sums of the good frames' valid flux
    started = _time.perf_counter()
    counts = np.zeros(4, dtype=np.int64)              # fitted, radial, failed, excluded
    flux_sum = np.zeros((h, w))
    valid = np.zeros((h, w), dtype=np.int64)
    invalid: dict[int, np.ndarray] = {}
    tasks = [(plan, t0, t1, times[t0:t1], good[t0:t1]) for t0, t1 in chunks]
    task_time = np.zeros(2)                           # Σ over tasks: zarr I/O, the rest
    for _, (stats, part_sum, part_valid, part_invalid, clock) in _run(client, _fit_chunk, tasks,
                                                                        "fit", progress):
        task_time += clock
        counts += stats
        if part_sum is not None:
            flux_sum += part_sum
            valid += part_valid
        invalid.update(part_invalid)
    seconds["fit"] = _time.perf_counter() - started

    # sum image: Σ background over the good frames from the summed smoothed models
    started = _time.perf_counter()
    sumimage = _sum_image(plan, geom, chunks, seg, half, good, times, flux_sum, valid, invalid)
    group["sumimage"][...] = sumimage
    seconds["sumimage"] = _time.perf_counter() - started

    # 2. background: smooth, render and write; shenanigans. The indicator's norm is
    # TASOC's mean of block medians over blocks of ~25 frames: whole time chunks,
    # spread evenly over the cube. Those chunks go first and keep their indicators
    # (scratch); every other chunk then flags in the same task, without a scratch.
    started = _time.perf_counter()
    sum_future = client.scatter(sumimage, broadcast=True)
    sample = _sample_chunks(len(chunks), depth)
    typical_sum = np.zeros((h, w))
    typical_n = np.zeros((h, w), dtype=np.int64)
    flagged = 0

    def background_tasks(indices, typical):
        out = []
        for i in indices:
            t0, t1 = chunks[i]
            a, b = max(t0 - half, 0), min(t1 + half, n)
            out.append((plan, t0, t1, a, b, seg[a:b], half, times[t0:t1], sum_future, typical))
        return out

    done = 0
    step = lambda stage, d, t: progress("background", done + d, len(chunks))  # noqa: E731
    for _, (block, clock) in _run(client, _background_chunk, background_tasks(sample, None),
                                  "background", step):
        task_time += clock
        ok = np.isfinite(block)
        typical_sum[ok] += block[ok]
        typical_n += ok
    done = len(sample)
    with np.errstate(invalid="ignore", divide="ignore"):
        typical = np.where(typical_n > 0, typical_sum / np.maximum(typical_n, 1),
                           np.nan).astype(np.float32)
    typical_future = client.scatter(typical, broadcast=True)
    rest = [i for i in range(len(chunks)) if i not in set(sample)]
    for _, (nflag, clock) in _run(client, _background_chunk, background_tasks(rest, typical_future),
                                  "background", step):
        task_time += clock
        flagged += nflag
    seconds["background"] = _time.perf_counter() - started

    # 3. flags of the sampled chunks, from their stored indicators
    started = _time.perf_counter()
    tasks = [(plan, *chunks[i], typical_future) for i in sample]
    for _, (nflag, clock) in _run(client, _flag_chunk, tasks, "flags", progress):
        task_time += clock
        flagged += nflag
    _delete(group, _INDICATOR)
    seconds["flags"] = _time.perf_counter() - started

    fitted, radial, failed, excluded = (int(v) for v in counts)
    frames_in_sum = int(np.sum(good))
    report = BackgroundReport(cube_id, n, len(chunks), cadence, window, radial, frames_in_sum,
                              failed, flagged, excluded, seconds,
                              {"io": float(task_time[0]), "compute": float(task_time[1])})
    group.attrs["background"] = {
        "method": "TASOC fit_background (DESIGN §4), numba kernels",
        "flux_cutoff": kbg.FLUX_CUTOFF, "box": kbg.BOX, "sigma": kbg.SIGMA,
        "maxiters": kbg.MAXITERS, "exclude_percentile": kbg.EXCLUDE_PERCENTILE,
        "iterations": kbg.ITERATIONS, "radial_cutoff": kbg.RADIAL_CUTOFF,
        "radial_step": kbg.RADIAL_STEP, "boresight": list(plan.boresight) if plan.boresight else None,
        "radial_table": {"r0": geom.t0, "dr": geom.dt, "n": geom.n_table},
        "tile_grid": list(geom.grid), "tile_size": [geom.by, geom.bx],
        "cadence_seconds": cadence, "window_frames": window,
        "good_quality_mask": GOOD_QUALITY_MASK, "frames_in_sum": frames_in_sum,
        "frames_with_radial": radial, "frames_failed": failed,
        "shenanigans_limit": kflags.SHENANIGANS_LIMIT, "shenanigans_size": kflags.SHENANIGANS_SIZE,
        "manual_exclude": [e.to_dict() for e in excludes],
        "corrected_flux": "flux - background (pixels with pixel_flags & 2 excluded)",
    }
    return report


def _sum_image(plan, geom, chunks, seg, half, good, times, flux_sum, valid, invalid):
    """Mean of the good frames' corrected flux without reading a pixel: the
    background enters linearly through its smoothed model, so Σ background over the
    good frames is the background of the summed models; the few (frame, pixel) pairs
    left out of ``flux_sum`` (manual excludes, non-finite flux) are taken back out
    of it frame by frame."""
    group = plan.cube.group("r")
    n = len(times)
    ny, nx = geom.grid
    mesh_sum = np.zeros((ny, nx))
    table_sum = np.zeros(geom.n_table)
    bkg_out = np.zeros(geom.shape)
    rects = plan.rects(times)
    frame = np.empty(geom.shape, dtype=np.float32)
    for t0, t1 in chunks:
        if not good[t0:t1].any():
            continue
        a, b = max(t0 - half, 0), min(t1 + half, n)
        mesh = ksmooth.smooth(group["bkg_mesh"][a:b], half, seg[a:b], t0 - a, t1 - a)
        table = ksmooth.smooth(group["bkg_radial"][a:b], half, seg[a:b], t0 - a, t1 - a)
        for k in np.flatnonzero(good[t0:t1]):
            i = t0 + k
            if not (np.isfinite(mesh[k]).all() and np.isfinite(table[k]).all()):
                # no background for this frame: its flux leaves the sum image as well
                flux = group["flux"][i]
                ok = np.isfinite(flux) & ~_rect_mask(rects[i], geom.shape)
                flux_sum[ok] -= flux[ok]
                valid[ok] -= 1
                continue
            mesh_sum += mesh[k]
            table_sum += table[k]
            if len(rects[i]) or i in invalid:
                kbg.render(mesh[k], table[k], geom, out=frame)
                out = _rect_mask(rects[i], geom.shape)
                out.ravel()[invalid.get(i, [])] = True
                bkg_out[out] += frame[out]
    bkg_sum = kbg.render(mesh_sum, table_sum, geom).astype(np.float64) - bkg_out
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(valid > 0, (flux_sum - bkg_sum) / np.maximum(valid, 1),
                        np.nan).astype(np.float32)


NORM_FRAMES = 25              # frames behind the shenanigans norm (TASOC's block size)


def _sample_chunks(n_chunks: int, depth: int) -> list[int]:
    """Indices of the time chunks whose indicators give the shenanigans norm: enough
    whole chunks for NORM_FRAMES frames, evenly spread over the cube."""
    k = min(n_chunks, max(1, -(-NORM_FRAMES // depth)))
    return sorted({int(round(v)) for v in np.linspace(0, n_chunks - 1, k)})


def _rect_mask(rects, shape):
    out = np.zeros(shape, dtype=bool)
    for r0, r1, c0, c1 in rects:
        out[r0:r1, c0:c1] = True
    return out


def corrected_flux(cube: Cube, chunks="frames", mask_excluded: bool = True):
    """The background-subtracted flux as a lazy (Dask-backed) xarray DataArray:
    ``flux − background``, manually excluded pixels (flag 2) as NaN."""
    ds = cube.dataset(chunks)
    if "background" not in ds:
        raise KeyError(f"cube {cube.cube_id} has no background yet: run the background stage")
    corr = ds["flux"] - ds["background"]
    if mask_excluded and "pixel_flags" in ds:
        corr = corr.where((ds["pixel_flags"] & kflags.MANUAL_EXCLUDE) == 0)
    corr.name = "corrected_flux"
    corr.attrs["units"] = "electron/s"
    return corr


# -- plan shared by the tasks ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _Plan:
    cube: Cube
    shape: tuple
    origin: tuple
    boresight: tuple | None
    sector: int | None
    camera: int | None
    ccd: int | None
    excludes: tuple

    def geometry(self) -> kbg.Geometry:
        return _geometry(self.shape, self.origin, self.boresight)

    def rects(self, times) -> list[np.ndarray]:
        return frame_rects(self.excludes, self.sector, self.camera, self.ccd, times,
                           self.origin, self.shape)


@functools.lru_cache(maxsize=8)
def _geometry(shape, origin, bore) -> kbg.Geometry:
    """Per worker process: the geometry of a cube is built once, not per task."""
    return kbg.geometry(shape, origin, bore)


def _create_outputs(group, n, shape, chunks, geom: kbg.Geometry) -> None:
    """Output arrays, time chunks aligned with ``flux`` (each task writes whole chunks).
    uint8/int16 arrays take 2× wider spatial chunks so a chunk is ≥ 1 MB (DESIGN §3)
    and a frame is written in a quarter of the chunk operations."""
    t, r, c = chunks
    ny, nx = geom.grid
    wide = (t, min(2 * r, shape[0]), min(2 * c, shape[1]))
    for name in (*OUTPUTS, _INDICATOR):
        _delete(group, name)
    group.create_array("background", shape=(n, *shape), chunks=(t, r, c), dtype="float32",
                       fill_value=np.nan, compressors=None, dimension_names=("time", "row", "col"))
    group.create_array("pixel_flags", shape=(n, *shape), chunks=wide, dtype="uint8",
                       fill_value=0, dimension_names=("time", "row", "col"))
    group.create_array("sumimage", shape=shape, chunks=(r, c), dtype="float32",
                       fill_value=np.nan, dimension_names=("row", "col"))
    group.create_array("bkg_mesh", shape=(n, ny, nx), chunks=(t, ny, nx), dtype="float32",
                       fill_value=np.nan, dimension_names=("time", "tile_row", "tile_col"))
    group.create_array("bkg_radial", shape=(n, geom.n_table), chunks=(t, geom.n_table),
                       dtype="float32", fill_value=np.nan, dimension_names=("time", "radius"))
    # scratch, written and read once: zstd would cost more than the bytes it saves
    group.create_array(_INDICATOR, shape=(n, *shape), chunks=wide, dtype="int16",
                       fill_value=int(kflags.Q_NONE), compressors=None,
                       dimension_names=("time", "row", "col"))


def _delete(group, name) -> None:
    if name in group:
        del group[name]


# -- tasks (run on workers) -----------------------------------------------------------------
class _Clock:
    """Seconds a task spends in zarr I/O and in everything else (kernels), measured
    in the task itself so the split holds whatever else runs on the machine."""

    def __init__(self):
        self.started = _time.perf_counter()
        self.io = 0.0

    def group(self, cube: Cube):
        t = _time.perf_counter()
        group = cube.group()
        self.io += _time.perf_counter() - t
        return group

    def read(self, array, sl):
        t = _time.perf_counter()
        out = array[sl]
        self.io += _time.perf_counter() - t
        return out

    def write(self, array, sl, value):
        t = _time.perf_counter()
        array[sl] = value
        self.io += _time.perf_counter() - t

    def split(self) -> np.ndarray:
        total = _time.perf_counter() - self.started
        return np.array([self.io, total - self.io])
def _fit_chunk(task):
    """Phase 1: models of frames [t0, t1) (masked with flag bits 1/2, which phase 2
    recomputes and stores); for the good frames, the sum and count of the flux that
    enters the sum image (finite, not excluded) and the flat indices of any other
    (non-finite, not excluded) pixels."""
    plan, t0, t1, times, good = task
    clock = _Clock()
    geom = plan.geometry()
    group = clock.group(plan.cube)
    flux = clock.read(group["flux"], slice(t0, t1))
    rects = plan.rects(times)
    nt = t1 - t0
    flags = np.empty(flux.shape, dtype=np.uint8)
    mesh = np.empty((nt, *geom.grid), dtype=np.float32)
    table = np.empty((nt, geom.n_table), dtype=np.float32)
    stats = np.zeros(4, dtype=np.int64)               # fitted, radial, failed, excluded
    total = count = None
    invalid = {}
    for k in range(nt):
        kflags.mask(flux[k], kbg.FLUX_CUTOFF, rects[k], out=flags[k])
        stats[3] += np.count_nonzero(flags[k] & kflags.MANUAL_EXCLUDE)
        m, tab, has_radial = kbg.fit(flux[k], flags[k], geom)
        if not np.all(np.isfinite(m)):
            m[:] = np.nan
            tab[:] = np.nan
            stats[2] += 1
        mesh[k], table[k] = m, tab
        stats[0] += 1
        stats[1] += bool(has_radial)
        if good[k]:
            if total is None:
                total = np.zeros(geom.shape)
                count = np.zeros(geom.shape, dtype=np.int64)
            bad = kbg.accumulate_valid(flux[k], flags[k], total, count)
            if bad:
                invalid[t0 + k] = np.flatnonzero(~np.isfinite(flux[k]) & (
                    (flags[k] & kflags.MANUAL_EXCLUDE) == 0)).astype(np.int32)
    clock.write(group["bkg_mesh"], slice(t0, t1), mesh)
    clock.write(group["bkg_radial"], slice(t0, t1), table)
    return stats, total, count, invalid, clock.split()


def _background_chunk(task):
    """Phase 2: time-smoothed backgrounds of [t0, t1) from the models of [a, b) (the
    halo), written; flag bits 1/2; each frame's shenanigans indicator, the 15×15
    median of (flux − background − sum image). Without a norm (``typical`` None):
    stores the indicators (scratch) and returns their per-pixel median over the
    chunk; with it: sets bit 4 and returns the number of flagged pixel-frames."""
    plan, t0, t1, a, b, seg, half, times, sumimage, typical = task
    clock = _Clock()
    geom = plan.geometry()
    group = clock.group(plan.cube)
    mesh = ksmooth.smooth(clock.read(group["bkg_mesh"], slice(a, b)), half, seg, t0 - a, t1 - a)
    table = ksmooth.smooth(clock.read(group["bkg_radial"], slice(a, b)), half, seg, t0 - a,
                           t1 - a)
    flux = clock.read(group["flux"], slice(t0, t1))
    rects = plan.rects(times)
    nt = t1 - t0
    flags = np.empty(flux.shape, dtype=np.uint8)
    bkg = np.empty((nt, *geom.shape), dtype=np.float32)
    ind = np.empty((nt, *geom.shape), dtype=np.int16)
    diff = np.empty(geom.shape, dtype=np.float32)
    for k in range(nt):
        kflags.mask(flux[k], kbg.FLUX_CUTOFF, rects[k], out=flags[k])
        if np.all(np.isfinite(mesh[k])) and np.all(np.isfinite(table[k])):
            kbg.render(mesh[k], table[k], geom, out=bkg[k])
        else:
            bkg[k] = np.nan
        kbg.subtract_frame(flux[k], bkg[k], sumimage, flags[k], diff)
        kflags.median_filter(diff, kflags.SHENANIGANS_SIZE, out=ind[k])
    clock.write(group["background"], slice(t0, t1), bkg)
    if typical is not None:                   # the norm is known: flag now
        for k in range(nt):
            kflags.shenanigans_flags(ind[k], typical, kflags.SHENANIGANS_LIMIT, flags[k])
        clock.write(group["pixel_flags"], slice(t0, t1), flags)
        return int(np.count_nonzero(flags & kflags.SHENANIGANS)), clock.split()
    clock.write(group["pixel_flags"], slice(t0, t1), flags)
    clock.write(group[_INDICATOR], slice(t0, t1), ind)
    block = np.empty(geom.shape, dtype=np.float32)
    kflags.block_median_q(ind, block)
    return block, clock.split()


def _flag_chunk(task):
    """Phase 4: bit 4 where the indicator deviates from the typical value."""
    plan, t0, t1, typical = task
    clock = _Clock()
    group = clock.group(plan.cube)
    ind = clock.read(group[_INDICATOR], slice(t0, t1))
    flags = clock.read(group["pixel_flags"], slice(t0, t1))
    for k in range(t1 - t0):
        kflags.shenanigans_flags(ind[k], typical, kflags.SHENANIGANS_LIMIT, flags[k])
    clock.write(group["pixel_flags"], slice(t0, t1), flags)
    return int(np.count_nonzero(flags & kflags.SHENANIGANS)), clock.split()


def _run(client: Client, fn, items: list, stage: str, progress: Progress, key=lambda t: (t[1], t[2])):
    return map_progress(client, fn, items, stage, progress, key, prefix="background")