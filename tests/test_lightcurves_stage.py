"""The light-curve stage on a small hand-made cube (no simulator): sums against
numpy, quality bits, NaN and manually excluded pixels, a cut-out's origin,
overlapping apertures, re-runs, a missing background — on a local folder and on S3
(moto). (Time blocks across zarr chunks: test_lightcurves_pipeline.)"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.lightcurves import (BACKGROUND_SHENANIGANS, MISSING_PIXELS, Aperture, export_fits,
                                  load_lightcurve)
from pipeline.store import COMPRESSORS, Cube, Store
from pipeline.stages.lightcurves import (LightcurveError, LightcurveOptions, plan_lightcurves,
                                         run_lightcurves, tile_lightcurves)

N, H, W = 40, 24, 30
ORIGIN = (500, 700)          # a cut-out's place on the CCD
CUBE = "s0019-1-3-tesscut-test"


def _make_cube(store: Store, with_background: bool = True) -> dict:
    rng = np.random.default_rng(4)
    cube = Cube(store, CUBE)
    cube.create((H, W), {"sector": 19, "camera": 1, "ccd": 3, "kind": "tesscut",
                         "origin": list(ORIGIN), "shape": [H, W]})
    time = 1816.1 + np.arange(N) / 48.0
    quality = np.zeros(N, np.int32)
    quality[5] = 32
    cube.extend(time, 10_000 + np.arange(N), quality)
    bkg = (100.0 + rng.normal(0, 1, (N, H, W))).astype(np.float32)
    stars = np.zeros((N, H, W), np.float32)
    stars[:, 5:8, 5:8] = 1000.0 * (1 + 0.01 * np.sin(np.arange(N)))[:, None, None]
    stars[:, 15:18, 20:23] = 300.0
    flux = (bkg + stars + rng.normal(0, 3, (N, H, W))).astype(np.float32)
    flux[7, 6, 6] = np.nan                                   # a missing pixel
    err = np.full((N, H, W), 3.0, np.float32)
    cube.write(0, flux, err)
    flags = np.zeros((N, H, W), np.uint8)
    flags[9, 15, 20] = 4                                     # shenanigans in aperture 2
    flags[11, 5, 5] = 2                                      # manual exclude in aperture 1
    if with_background:
        group = cube.group()
        for name, data in (("background", bkg), ("pixel_flags", flags)):
            group.create_array(name, shape=data.shape, chunks=group["flux"].chunks, dtype=data.dtype,
                               fill_value=0, compressors=COMPRESSORS, dimension_names=("time", "row", "col"))
            group[name][...] = data
    rows1, cols1 = np.mgrid[4:9, 4:9]
    rows2, cols2 = np.mgrid[14:19, 19:24]
    aps = [Aperture(1, rows1.ravel() + ORIGIN[0], cols1.ravel() + ORIGIN[1], tile="a", meta={"ra": 65.0, "dec": 28.0}),
           Aperture(2, rows2.ravel() + ORIGIN[0], cols2.ravel() + ORIGIN[1], tile="b"),
           # overlaps aperture 1: measured in a second label layer of the same tile
           Aperture(3, [6, 6, 7] + np.array(ORIGIN[0]), [6, 7, 6] + np.array(ORIGIN[1]), tile="a")]
    masks = []
    for ap in aps:
        m = np.zeros((H, W), bool)
        m[ap.rows - ORIGIN[0], ap.cols - ORIGIN[1]] = True
        masks.append(m)
    return {"cube": cube, "flux": flux, "bkg": bkg, "flags": flags, "time": time, "quality": quality,
            "apertures": aps, "masks": masks}


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    return Store.from_settings(request.getfixturevalue("s3_settings"))


def test_stage_sums_quality_and_reruns(store, catalog, dask_client, tmp_path):
    d = _make_cube(store)
    report = run_lightcurves(store, catalog, CUBE, dask_client, apertures=d["apertures"],
                             options=LightcurveOptions(group_size=2))
    assert report.written == 3 and report.removed == 0
    corrected = d["flux"].astype(float) - d["bkg"].astype(float)
    excluded = (d["flags"] & 2) != 0
    for ap, m in zip(d["apertures"], d["masks"]):
        lc = load_lightcurve(catalog, 19, 1, 3, ap.label)
        vals = np.where(excluded[:, m] | ~np.isfinite(corrected[:, m]), 0.0, corrected[:, m])
        np.testing.assert_allclose(lc.flux, vals.astype(float).sum(axis=1), rtol=1e-9)
        np.testing.assert_allclose(lc.flux_bkg[[0, 20]], d["bkg"][[0, 20]][:, m].astype(float).sum(axis=1), rtol=1e-6)
        np.testing.assert_allclose(lc.time, d["time"])
        assert lc.cadenceno.tolist() == list(10_000 + np.arange(N))
        # centroids in CCD coordinates
        assert ORIGIN[0] <= np.nanmedian(lc.centroid_row) <= ORIGIN[0] + H
        assert lc.quality[5] & 32
    lc1 = load_lightcurve(catalog, 19, 1, 3, 1)
    assert np.nanmedian(lc1.centroid_row) == pytest.approx(ORIGIN[0] + 6, abs=0.05)
    assert np.nanmedian(lc1.centroid_col) == pytest.approx(ORIGIN[1] + 6, abs=0.05)
    assert lc1.quality[7] & MISSING_PIXELS and lc1.n_bad_pixels[7] == 1
    assert lc1.quality[11] & MISSING_PIXELS and lc1.pixel_quality[11] == 2
    assert lc1.meta["ra"] == 65.0 and lc1.meta["n_good"] == N - 3
    lc2 = load_lightcurve(catalog, 19, 1, 3, 2)
    assert lc2.quality[9] & BACKGROUND_SHENANIGANS and not lc2.quality[8]
    assert lc2.meta["median_flux"] == pytest.approx(9 * 300.0, rel=0.01)
    # re-run with one aperture fewer: replaced, and the stale one removed
    again = run_lightcurves(store, catalog, CUBE, dask_client, apertures=d["apertures"][:2])
    assert again.written == 2 and again.removed == 1
    assert sorted(catalog.lightcurves.distinct("label")) == [1, 2]
    # the curated zone holds the exports
    paths = export_fits(catalog, store, None, sector=19)
    assert len(paths) == 2
    assert store.exists("curated/lightcurves/s0019/1-3/tess-s0019-1-3-00000001_lc.fits")


def test_single_task_equals_blocks_and_needs_background(tmp_path, catalog):
    store = Store(str(tmp_path / "store"))
    d = _make_cube(store)
    plan = plan_lightcurves(store, CUBE, d["apertures"])
    assert [t.key for t in plan.tiles] == ["a", "b"] and len(plan.tiles[0].layers()) == 2
    r_one = tile_lightcurves(plan.cube, plan.tiles[0], catalog)
    one = load_lightcurve(catalog, 19, 1, 3, 3).flux
    tile_lightcurves(plan.cube, plan.tiles[0], catalog, LightcurveOptions(block_bytes=1))
    np.testing.assert_array_equal(load_lightcurve(catalog, 19, 1, 3, 3).flux, one)
    assert r_one.labels == [1, 3]
    bare = Store(str(tmp_path / "bare"))
    d = _make_cube(bare, with_background=False)
    plan = plan_lightcurves(bare, CUBE, d["apertures"])
    with pytest.raises(LightcurveError, match="background"):
        tile_lightcurves(plan.cube, plan.tiles[0], catalog)
