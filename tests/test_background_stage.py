"""The background stage end to end: simulate → ingest → run_background on the real
Dask cluster fixture, against a whole-array numpy computation of the same method;
on moto's S3 once; on the real RY Tau TESScut cube."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.ndimage import median_filter

from kernels import background as kbg
from kernels import flags as kflags
from kernels import smoothing as ksmooth
from pipeline.camera import ManualExclude, boresight, frame_rects, load_excludes
from pipeline.simulate import simulate
from pipeline.stages.background import (GOOD_QUALITY_MASK, corrected_flux, run_background)
from pipeline.stages.ingest import ingest
from pipeline.store import Cube, Store

RYTAU = "tess-s0019-1-3_65.489205_28.443210_10x10_astrocut.fits"


@pytest.fixture(scope="module")
def sim200(tmp_path_factory):
    """30 cadences of 200 s, 256² px: zarr time chunks of 8, a 27-frame window, so
    every chunk's smoothing reaches two chunks into each neighbour."""
    return simulate(tmp_path_factory.mktemp("sim200"), frames=30, size=256, camera=1, ccd=3,
                    sector=14, cadence=200.0, seed=8)


def _nan_median_filter(x, size=15):
    """scipy's median_filter (mode "reflect"), NaN left out of the windows."""
    if np.isfinite(x).all():
        return median_filter(x, size=size, mode="reflect")
    from numpy.lib.stride_tricks import sliding_window_view

    padded = np.pad(x, size // 2, mode="symmetric")          # = scipy "reflect"
    windows = sliding_window_view(padded, (size, size)).reshape(*x.shape, -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.nanmedian(windows, axis=-1)


def _whole_array_reference(cube: Cube, excludes, sample=None):
    """The same method on the whole cube in memory, numpy only between the kernels."""
    group = cube.group("r")
    attrs = dict(group.attrs)
    flux = group["flux"][:]
    coords = cube.coords()
    geom = kbg.geometry(flux.shape[1:], attrs["origin"], boresight(attrs["camera"], attrs["ccd"]))
    rects = frame_rects(excludes, attrs["sector"], attrs["camera"], attrs["ccd"], coords["time"],
                        attrs["origin"], flux.shape[1:])
    flags = np.stack([kflags.mask(f, rects=r) for f, r in zip(flux, rects)])
    raw = np.stack([kbg.render(*kbg.fit(f, m, geom)[:2], geom) for f, m in zip(flux, flags)])
    seg = ksmooth.segments(coords["time"])
    w = ksmooth.window_frames(ksmooth.cadence_seconds(coords["time"])) // 2
    good = (coords["quality"] & GOOD_QUALITY_MASK) == 0
    bkg = np.empty_like(raw)
    for k in range(len(raw)):                  # mean over the window, cut at the ends;
        sel = [j for j in range(len(raw))      # a good frame's holds good frames only
               if abs(j - k) <= w and seg[j] == seg[k] and (good[j] or not good[k])]
        bkg[k] = raw[sel].mean(axis=0)
    corr = np.where(flags & kflags.MANUAL_EXCLUDE, np.nan, flux - bkg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sumimage = np.nanmean(corr[good], axis=0)
    ind = np.stack([_nan_median_filter(c - sumimage) for c in corr])
    depth = group["flux"].chunks[0]
    starts = range(0, len(ind), depth) if sample is None else [i * depth for i in sample]
    typical = np.mean([np.median(ind[i:i + depth], axis=0) for i in starts], axis=0)
    return {"flux": flux, "background": bkg, "flags": flags, "sumimage": sumimage,
            "deviation": np.abs(ind - typical), "good": good, "window": 2 * w + 1}


def test_stage_equals_whole_array_computation(sim200, tmp_path, catalog, dask_client,
                                              monkeypatch):
    from pipeline.stages import background_tasks

    # the sample is chosen on the driver while the graph is built
    monkeypatch.setattr(background_tasks, "NORM_FRAMES", 16)    # norm from chunks 0 and 3 of 4
    assert background_tasks.sample_chunks(4, 8) == [0, 3]
    store = Store(str(tmp_path / "store"))
    report = ingest([str(p) for p in sim200.paths], store, catalog, dask_client)
    (cube_id,) = report.cubes
    excludes = [ManualExclude(camera=1, ccd=3, rows=(100, 140), cols=(20, 60),
                              time=(0.0, float(sim200.load_truth().frames["time"][4])),
                              reason="test")]
    seen = []
    result = run_background(store, cube_id, dask_client, exclude=excludes,
                            progress=lambda s, d, t: seen.append((s, d, t)))
    # 4 fits, the sum image, 4 smoothing tasks and 2 flag tasks, each counted once
    assert {s for s, _, _ in seen} == {"background"} and seen[-1][1:] == (11, 11)
    cube = Cube(store, cube_id)
    group = cube.group("r")
    assert group["flux"].chunks[0] == 8 and result.chunks == 4
    assert (result.window, result.frames) == (27, 30)
    ref = _whole_array_reference(cube, [ManualExclude(**e.to_dict()) for e in excludes],
                                 sample=[0, 3])

    background = group["background"][:]
    assert background.dtype == np.float32
    np.testing.assert_allclose(background, ref["background"], atol=2e-3)
    np.testing.assert_allclose(group["sumimage"][:], ref["sumimage"], atol=2e-3, equal_nan=True)
    flags = group["pixel_flags"][:]
    assert flags.dtype == np.uint8
    np.testing.assert_array_equal(flags & 3, ref["flags"])
    assert np.all(flags[:5, 100:140, 20:60] == 3) and not np.any(flags[5:, 100:140, 20:60] & 2)
    she = (flags & kflags.SHENANIGANS) != 0
    # the stage's indicator and norm are quantised to 1/8 e-/s: compare where that can't matter
    decided = np.abs(ref["deviation"] - kflags.SHENANIGANS_LIMIT) > 2 * kflags.QUANTUM
    np.testing.assert_array_equal(she[decided], ref["deviation"][decided] > kflags.SHENANIGANS_LIMIT)
    assert result.frames_in_sum == int(ref["good"].sum()) < 30
    assert result.excluded == 5 * 40 * 40

    corr = corrected_flux(cube)
    assert corr.chunks is not None                    # lazy
    values = corr.values
    assert np.all(np.isnan(values[:5, 100:140, 20:60]))
    np.testing.assert_allclose(values[5:], ref["flux"][5:] - background[5:], atol=1e-4)
    meta = dict(group.attrs)["background"]
    assert meta["window_frames"] == 27 and meta["manual_exclude"][0]["rows"] == [100, 140]


def test_stage_on_s3(tmp_path_factory, s3_settings, catalog, dask_client):
    sim = simulate(tmp_path_factory.mktemp("sim_s3"), frames=20, size=128, camera=2, ccd=1,
                   sector=14, cadence=1800.0, seed=9)
    store = Store.from_settings(s3_settings)
    report = ingest([str(p) for p in sim.paths], store, catalog, dask_client)
    (cube_id,) = report.cubes
    result = run_background(store, cube_id, dask_client)
    assert (result.frames, result.chunks, result.window) == (20, 2, 3)
    cube = Cube(store, cube_id)
    ref = _whole_array_reference(cube, ())
    group = cube.group("r")
    np.testing.assert_allclose(group["background"][:], ref["background"], atol=2e-3)
    np.testing.assert_allclose(group["sumimage"][:], ref["sumimage"], atol=2e-3)
    assert not store.exists(f"staging/{cube_id}.zarr/_bkg_shenanigans/zarr.json")


def test_stage_on_tesscut_rytau(tess_data, tmp_path, catalog, dask_client):
    store = Store(str(tmp_path / "store"))
    report = ingest([str(tess_data / RYTAU)], store, catalog, dask_client)
    (cube_id,) = report.cubes
    result = run_background(store, cube_id, dask_client)
    cube = Cube(store, cube_id)
    group = cube.group("r")
    quality = cube.coords()["quality"]
    assert result.frames == 1155 and result.frames_with_radial == 0   # far inside the bins' reach
    assert result.frames_in_sum == int(np.sum((quality & GOOD_QUALITY_MASK) == 0)) < 1155
    meta = dict(group.attrs)["background"]
    assert meta["tile_grid"] == [1, 1] and meta["tile_size"] == [10, 10]
    background = group["background"][:]
    assert np.isfinite(background).all()
    assert np.ptp(background, axis=(1, 2)).max() < 1e-3          # one tile: flat frames
    assert np.isfinite(group["sumimage"][:]).all()
    # RY Tau (the brightest pixel of the sum image) dims and recovers by tens of per cent
    corr = corrected_flux(cube).values
    peak = np.unravel_index(np.argmax(group["sumimage"][:]), (10, 10))
    series = corr[:, peak[0], peak[1]]
    lo, hi = np.nanpercentile(series, [1, 99])
    assert (hi - lo) / hi > 0.2


def test_manual_exclude_list_from_file(tmp_path):
    path = tmp_path / "exclude.toml"
    path.write_text('[[exclude]]\ncamera = 1\nccd = 4\nsector = 1\ncols = [1536, 2048]\n'
                    'time = [1325.0, 1325.88]\nreason = "Mars"\n')
    (entry,) = load_excludes(path)
    assert entry.cols == (1536, 2048) and entry.rows is None
    rects = frame_rects([entry], 1, 1, 4, [1325.5, 1326.0], (0, 1500), (100, 100))
    np.testing.assert_array_equal(rects[0], [[0, 100, 36, 100]])
    assert rects[1].shape == (0, 4)
    assert frame_rects([entry], 2, 1, 4, [1325.5], (0, 0), (10, 10))[0].shape == (0, 4)
    with pytest.raises(ValueError):
        ManualExclude(camera=1, ccd=1, rows=(5, 1))
