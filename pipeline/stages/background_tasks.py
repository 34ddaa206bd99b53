"""The background stage's tasks: each a plain function of picklable arguments that
reads and writes whole zarr chunks of its own, so ``pipeline.stages.background`` can
wire them into a Dask graph (alone, or as one part of the whole run). The phases and
the reasons behind them are described in ``pipeline.stages.background``."""

from __future__ import annotations

import dataclasses
import functools
import time as _time

import numpy as np

from kernels import background as kbg
from kernels import flags as kflags
from kernels import smoothing as ksmooth
from pipeline.camera import as_excludes, boresight, frame_rects
from pipeline import checkpoints
from pipeline.store import Cube, Store

GOOD_QUALITY_MASK = 4271      # 1|2|4|8|32|64|128|4096: frames with these bits are "bad"
OUTPUTS = ("background", "pixel_flags", "sumimage", "bkg_mesh", "bkg_radial")
INDICATOR = "_bkg_shenanigans"
NORM_FRAMES = 25              # frames behind the shenanigans norm (TASOC's block size)


@dataclasses.dataclass
class Prepared:
    """What every task of one cube's background needs, decided once by ``prepare``."""

    plan: "CubePlan"
    n: int
    chunks: list                # [(t0, t1)] whole zarr time chunks
    times: np.ndarray
    good: np.ndarray            # frame enters the sum image
    seg: np.ndarray             # continuous segments (no smoothing across gaps)
    cadence: float
    window: int
    started: float              # time.time() when the stage began
    stamp: dict = dataclasses.field(default_factory=dict)   # what it is made from (checkpoints)

    @property
    def half(self) -> int:
        return self.window // 2

    def span(self, i: int) -> tuple[int, int, int, int]:
        """Chunk i as (t0, t1) with its smoothing halo (a, b)."""
        t0, t1 = self.chunks[i]
        return t0, t1, max(t0 - self.half, 0), min(t1 + self.half, self.n)


def chunk_count(store: Store, cube_id: str) -> tuple[int, int]:
    """(frames, time chunks) of a cube as it stands — the graph's size."""
    flux = Cube(store, cube_id).group("r")["flux"]
    n, depth = int(flux.shape[0]), int(flux.chunks[0])
    return n, -(-n // depth)


def prepare(store: Store, cube_id: str, exclude=None, *upstream) -> Prepared:
    """Read the cube's coordinates, decide window and segments, create the outputs
    (replacing any earlier ones). ``upstream``: results to wait for (e.g. ingest)."""
    cube = Cube(store, cube_id)
    if not cube.exists():
        raise FileNotFoundError(f"no cube {cube_id} in {store.url}")
    group = cube.group()
    attrs = dict(group.attrs)
    n, h, w = group["flux"].shape
    depth = group["flux"].chunks[0]
    coords = cube.coords()
    times, quality = coords["time"], coords["quality"]
    plan = CubePlan(
        cube=cube, shape=(h, w), origin=tuple(int(v) for v in attrs.get("origin", (0, 0))),
        boresight=boresight(attrs.get("camera"), attrs.get("ccd")),
        sector=attrs.get("sector"), camera=attrs.get("camera"), ccd=attrs.get("ccd"),
        excludes=as_excludes(exclude))
    cadence = ksmooth.cadence_seconds(times)
    earlier = dict(group.attrs.get("background") or {})
    if "stamp" in earlier:      # the outputs are about to be replaced: no longer reusable
        group.attrs["background"] = {k: v for k, v in earlier.items() if k not in ("stamp", "run")}
    _create_outputs(group, n, (h, w), group["flux"].chunks, plan.geometry())
    return Prepared(plan, n, [(t0, min(t0 + depth, n)) for t0 in range(0, n, depth)],
                    times, (quality.astype(np.int64) & GOOD_QUALITY_MASK) == 0,
                    ksmooth.segments(times, cadence), cadence, ksmooth.window_frames(cadence),
                    _time.time(), checkpoints.background_stamp(coords, plan.excludes))


def sample_chunks(n_chunks: int, depth: int) -> list[int]:
    """Indices of the time chunks whose indicators give the shenanigans norm: enough
    whole chunks for NORM_FRAMES frames, evenly spread over the cube."""
    k = min(n_chunks, max(1, -(-NORM_FRAMES // depth)))
    return sorted({int(round(v)) for v in np.linspace(0, n_chunks - 1, k)})


# -- phase 1: fit, then the sum image ----------------------------------------------------------
def fit(prep: Prepared, i: int):
    t0, t1 = prep.chunks[i]
    return _fit_chunk((prep.plan, t0, t1, prep.times[t0:t1], prep.good[t0:t1]))


def combine_fits(*parts):
    """Sum of fit results (a tree reduction: the partial sums are full images)."""
    stats = np.zeros(4, dtype=np.int64)
    clock = np.zeros(2)
    total = count = None
    invalid: dict = {}
    for part_stats, part_total, part_count, part_invalid, part_clock in parts:
        stats += part_stats
        clock += part_clock
        invalid.update(part_invalid)
        if part_total is not None:
            if total is None:
                total, count = part_total.copy(), part_count.copy()
            else:
                total += part_total
                count += part_count
    return stats, total, count, invalid, clock


@dataclasses.dataclass
class SumImage:
    image: np.ndarray
    stats: np.ndarray           # fitted, radial, failed, excluded
    clock: np.ndarray           # Σ fit tasks: io, compute


def sum_image(prep: Prepared, fits) -> SumImage:
    """Write and return the sum image (see ``_sum_image``)."""
    stats, total, count, invalid, clock = fits
    shape = prep.plan.shape
    total = np.zeros(shape) if total is None else total.copy()
    count = np.zeros(shape, dtype=np.int64) if count is None else count.copy()
    image = _sum_image(prep.plan, prep.plan.geometry(), prep.chunks, prep.seg, prep.half,
                       prep.good, prep.times, total, count, invalid)
    prep.plan.cube.group()["sumimage"][...] = image
    return SumImage(image, stats, clock)


# -- phase 2: backgrounds and shenanigans; phase 3: flags of the sampled chunks ----------------
def background(prep: Prepared, i: int, summed: SumImage, norm=None):
    """Chunk i's backgrounds; ``norm`` (from ``typical``) None for the sampled chunks,
    which keep their indicators for ``flag``."""
    t0, t1, a, b = prep.span(i)
    return _background_chunk((prep.plan, t0, t1, a, b, prep.seg[a:b], prep.good[a:b], prep.half,
                              prep.times[t0:t1], summed.image, None if norm is None else norm[0]))


def typical(*sampled):
    """The shenanigans norm: the mean over the sampled chunks of their per-pixel
    block medians, and the Σ of those tasks' clocks."""
    first = sampled[0][0]
    total = np.zeros(first.shape)
    n = np.zeros(first.shape, dtype=np.int64)
    clock = np.zeros(2)
    for block, part_clock in sampled:
        ok = np.isfinite(block)
        total[ok] += block[ok]
        n += ok
        clock += part_clock
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(n > 0, total / np.maximum(n, 1), np.nan).astype(np.float32)
    return norm, clock


def flag(prep: Prepared, i: int, norm):
    t0, t1 = prep.chunks[i]
    return _flag_chunk((prep.plan, t0, t1, norm[0]))


def remove_scratch(prep: Prepared) -> None:
    _delete(prep.plan.cube.group(), INDICATOR)


# -- the cube's plan, shared by the tasks ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CubePlan:
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
    _delete(group, INDICATOR)
    _require(group, "background", shape=(n, *shape), chunks=(t, r, c), dtype="float32",
             fill_value=np.nan, compressors=None, dimension_names=("time", "row", "col"))
    _require(group, "pixel_flags", shape=(n, *shape), chunks=wide, dtype="uint8",
             fill_value=0, dimension_names=("time", "row", "col"))
    _require(group, "sumimage", shape=shape, chunks=(r, c), dtype="float32",
             fill_value=np.nan, dimension_names=("row", "col"))
    _require(group, "bkg_mesh", shape=(n, ny, nx), chunks=(t, ny, nx), dtype="float32",
             fill_value=np.nan, dimension_names=("time", "tile_row", "tile_col"))
    _require(group, "bkg_radial", shape=(n, geom.n_table), chunks=(t, geom.n_table),
             dtype="float32", fill_value=np.nan, dimension_names=("time", "radius"))
    # scratch, written and read once: zstd would cost more than the bytes it saves
    group.create_array(INDICATOR, shape=(n, *shape), chunks=wide, dtype="int16",
                       fill_value=int(kflags.Q_NONE), compressors=None,
                       dimension_names=("time", "row", "col"))


def _require(group, name, shape, chunks, dtype, **options) -> None:
    """An output array of this layout: an earlier run's is kept (resized to the cube's
    cadences) and overwritten chunk by chunk, so readers (the API) never see it vanish
    while a re-run replaces it; one of another layout is made anew."""
    if name in group:
        old = group[name]
        if (old.dtype == np.dtype(dtype) and tuple(old.chunks) == tuple(chunks)
                and tuple(old.shape[1:]) == tuple(shape[1:]) and len(old.shape) == len(shape)):
            if tuple(old.shape) != tuple(shape):
                old.resize(shape)
            return
        del group[name]
    group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, **options)


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
    plan, t0, t1, a, b, seg, good, half, times, sumimage, typical = task
    clock = _Clock()
    geom = plan.geometry()
    group = clock.group(plan.cube)
    mesh = ksmooth.smooth_good(clock.read(group["bkg_mesh"], slice(a, b)), half, good, seg,
                               t0 - a, t1 - a)
    table = ksmooth.smooth_good(clock.read(group["bkg_radial"], slice(a, b)), half, good, seg,
                                t0 - a, t1 - a)
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
    clock.write(group[INDICATOR], slice(t0, t1), ind)
    block = np.empty(geom.shape, dtype=np.float32)
    kflags.block_median_q(ind, block)
    return block, clock.split()


def _flag_chunk(task):
    """Phase 4: bit 4 where the indicator deviates from the typical value."""
    plan, t0, t1, typical = task
    clock = _Clock()
    group = clock.group(plan.cube)
    ind = clock.read(group[INDICATOR], slice(t0, t1))
    flags = clock.read(group["pixel_flags"], slice(t0, t1))
    for k in range(t1 - t0):
        kflags.shenanigans_flags(ind[k], typical, kflags.SHENANIGANS_LIMIT, flags[k])
    clock.write(group["pixel_flags"], slice(t0, t1), flags)
    return int(np.count_nonzero(flags & kflags.SHENANIGANS)), clock.split()


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
        mesh = ksmooth.smooth_good(group["bkg_mesh"][a:b], half, good[a:b], seg[a:b], t0 - a, t1 - a)
        table = ksmooth.smooth_good(group["bkg_radial"][a:b], half, good[a:b], seg[a:b], t0 - a,
                                    t1 - a)
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


def _rect_mask(rects, shape):
    out = np.zeros(shape, dtype=bool)
    for r0, r1, c0, c1 in rects:
        out[r0:r1, c0:c1] = True
    return out


