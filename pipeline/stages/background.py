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

Phases (tasks per time chunk in one Dask graph, ``background_graph``; every task reads
and writes whole zarr chunks of its own; the tasks are in ``background_tasks``):

1. fit — read flux, mask it (flag bits 1/2), fit each frame's model, write
   ``bkg_mesh`` and ``bkg_radial``; for good frames, sum the flux entering the sum image.
   The sum image then needs no pass over the pixels: the smoothed background is
   linear in the smoothed model, so Σ background over the good frames is the
   background of the summed models (a tree of combine tasks adds the fit tasks'
   partial sums, one task renders one image; the rare pixels
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
Memory per task is a few time chunks of frames whatever the length of the series (a
combine task holds at most 8 partial sum images); the driver holds nothing.
"""

from __future__ import annotations

import dataclasses
import time as _time
import uuid
from typing import Callable, Iterable

import numpy as np
from dask import delayed
from distributed import Client

from kernels import background as kbg
from kernels import flags as kflags
from pipeline.camera import ManualExclude, as_excludes
from pipeline.cluster import StageProgress
from pipeline.stages import background_tasks as tasks
from pipeline.stages.background_tasks import GOOD_QUALITY_MASK, OUTPUTS  # noqa: F401 (public)
from pipeline.store import Cube, Store

STAGE = "background"
FAN_IN = 8                    # partial sum images combined per reduction task

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
    reused: bool = False            # a finished background of the same cadences, not redone

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))

    def __repr__(self) -> str:
        return (f"<BackgroundReport {self.cube_id}: {self.frames} frames in {self.chunks} chunks, "
                f"window {self.window} @ {self.cadence:.0f} s, radial term in "
                f"{self.frames_with_radial}, sum image of {self.frames_in_sum}, "
                f"{self.shenanigans} shenanigans pixel-frames, "
                + ("reused>" if self.reused else f"{self.total_seconds:.1f} s>"))


def background_graph(store: Store, cube_id: str, upstream=(), exclude=None,
                     progress: StageProgress | None = None, token: str | None = None):
    """The whole stage for one cube as one ``dask.delayed`` (→ ``BackgroundReport``),
    to compute alone or as part of a bigger graph. ``upstream``: delayed results the
    stage must wait for (e.g. the ingest that fills the cube); the number of time
    chunks is read from the cube as it stands (an ingest plan has already sized it).
    ``progress``: counts finished tasks under the stage name "background"."""
    progress = progress or StageProgress()
    token = token or uuid.uuid4().hex[:8]
    excludes = as_excludes(exclude)
    n, n_chunks = tasks.chunk_count(store, cube_id)
    depth = Cube(store, cube_id).group("r")["flux"].chunks[0]
    cid = f"{cube_id}-{token}"

    def task(fn, name, *args, tracked=True):
        f = progress.task(fn, STAGE) if tracked else fn
        return delayed(f, pure=False)(*args, dask_key_name=f"background-{name}-{cid}")

    prep = task(tasks.prepare, "prepare", store, cube_id, excludes, *upstream, tracked=False)
    level = [task(tasks.fit, f"fit-{i}", prep, i) for i in range(n_chunks)]
    depth_n = 0
    while len(level) > 1 or depth_n == 0:    # always one combine, also for one chunk
        level = [task(tasks.combine_fits, f"combine{depth_n}-{j}", *level[j:j + FAN_IN],
                      tracked=False) for j in range(0, len(level), FAN_IN)]
        depth_n += 1
    summed = task(tasks.sum_image, "sumimage", prep, level[0])
    sample = tasks.sample_chunks(n_chunks, depth)
    sampled = [task(tasks.background, f"smooth-{i}", prep, i, summed, None) for i in sample]
    norm = task(tasks.typical, "norm", *sampled, tracked=False)
    chosen = set(sample)
    rest = [task(tasks.background, f"smooth-{i}", prep, i, summed, norm)
            for i in range(n_chunks) if i not in chosen]
    flags = [task(tasks.flag, f"flags-{i}", prep, i, norm) for i in sample]
    return task(_finish, "finish", prep, summed, norm, rest, flags, tracked=False)


def run_background(store: Store, cube_id: str, client: Client, progress: Progress | None = None,
                   exclude: Iterable[ManualExclude | dict] | None = None) -> BackgroundReport:
    """Estimate and store the background, pixel flags and sum image of a cube.

    ``exclude``: manual-exclude regions (``pipeline.camera.ManualExclude`` or dicts);
    None: the default list (empty). Re-running replaces every output. ``progress``
    is called as progress("background", done, total) as the tasks finish."""
    counter = StageProgress(client, progress)
    try:
        return client.compute(background_graph(store, cube_id, exclude=exclude,
                                                progress=counter)).result()
    finally:
        counter.finish()
        counter.detach()


def _finish(prep: tasks.Prepared, summed: tasks.SumImage, norm, rest, flags) -> BackgroundReport:
    """Record the method and counts in the cube's attributes, drop the scratch."""
    tasks.remove_scratch(prep)
    flagged = sum(int(count) for count, _ in (*rest, *flags))
    clock = summed.clock + norm[1] + sum((c for _, c in (*rest, *flags)), np.zeros(2))
    fitted, radial, failed, excluded = (int(v) for v in summed.stats)
    frames_in_sum = int(np.sum(prep.good))
    plan, geom = prep.plan, prep.plan.geometry()
    report = BackgroundReport(plan.cube.cube_id, prep.n, len(prep.chunks), prep.cadence,
                              prep.window, radial, frames_in_sum, failed, flagged, excluded,
                              {"total": _time.time() - prep.started},
                              {"io": float(clock[0]), "compute": float(clock[1])})
    plan.cube.group().attrs["background"] = {
        "method": "TASOC fit_background (DESIGN §4), numba kernels",
        "flux_cutoff": kbg.FLUX_CUTOFF, "box": kbg.BOX, "sigma": kbg.SIGMA,
        "maxiters": kbg.MAXITERS, "exclude_percentile": kbg.EXCLUDE_PERCENTILE,
        "iterations": kbg.ITERATIONS, "radial_cutoff": kbg.RADIAL_CUTOFF,
        "radial_step": kbg.RADIAL_STEP, "boresight": list(plan.boresight) if plan.boresight else None,
        "radial_table": {"r0": geom.t0, "dr": geom.dt, "n": geom.n_table},
        "tile_grid": list(geom.grid), "tile_size": [geom.by, geom.bx],
        "cadence_seconds": prep.cadence, "window_frames": prep.window,
        "good_quality_mask": GOOD_QUALITY_MASK, "frames_in_sum": frames_in_sum,
        "frames_with_radial": radial, "frames_failed": failed,
        "shenanigans_limit": kflags.SHENANIGANS_LIMIT, "shenanigans_size": kflags.SHENANIGANS_SIZE,
        "manual_exclude": [e.to_dict() for e in plan.excludes],
        "corrected_flux": "flux - background (pixels with pixel_flags & 2 excluded)",
        "frames": prep.n, "chunks": len(prep.chunks), "shenanigans": flagged,
        "excluded": excluded, "seconds": report.total_seconds,
        # written last, with the outputs complete: later runs reuse them (pipeline.checkpoints)
        "run": uuid.uuid4().hex, "stamp": prep.stamp,
    }
    return report


def finished_report(cube_id: str, attrs: dict) -> BackgroundReport:
    """The report of a finished background, from its cube attribute (a run that
    reuses it)."""
    return BackgroundReport(cube_id, int(attrs["frames"]), int(attrs["chunks"]),
                            float(attrs["cadence_seconds"]), int(attrs["window_frames"]),
                            int(attrs["frames_with_radial"]), int(attrs["frames_in_sum"]),
                            int(attrs["frames_failed"]), int(attrs["shenanigans"]),
                            int(attrs["excluded"]), {"reused": 0.0}, reused=True)


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
