"""Background kernels against the libraries TASOC uses, on the same inputs: numpy
sort, astropy SigmaClip + photutils SExtractorBackground, statsmodels KDE, scipy
splines/zoom/median filters, photutils Background2D and ShepardIDWInterpolator."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.interpolate import InterpolatedUnivariateSpline
from scipy.ndimage import generic_filter, median_filter, zoom
from scipy.stats import binned_statistic

from kernels import background as kbg
from kernels import flags as kflags
from kernels import radial, smoothing, stats, tiles

RNG = np.random.default_rng(20261128)


# -- stats ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 17, 33, 4096, 20000])
def test_sort_f32_matches_numpy(n):
    x = RNG.normal(100, 5, n).astype(np.float32)
    x[: n // 7] *= -3
    x[n // 7: n // 5] = RNG.uniform(1e4, 1e5, n // 5 - n // 7)
    got = x.copy()
    stats.sort_f32(got, n, np.empty(n, np.uint32), np.empty(n, np.uint32))
    assert np.array_equal(got, np.sort(x))


@pytest.mark.parametrize("case", range(6))
def test_sextractor_matches_photutils(case):
    from astropy.stats import SigmaClip
    from photutils.background import SExtractorBackground

    n = [4096, 4096, 500, 37, 4096, 2000][case]
    x = RNG.normal(150, [0.4, 3.0, 1.0, 2.0, 0.5, 1.0][case], n)
    if case in (1, 4):                      # a faint-star tail
        x[: n // 20] += RNG.exponential(20, n // 20)
    if case == 5:                           # strongly skewed: the median branch
        x = RNG.exponential(3.0, n) + 100
    x = x.astype(np.float32)
    s = np.sort(x)
    got, kept = stats.sextractor_sorted(s, n, 3.0, 5)
    want = SExtractorBackground(sigma_clip=SigmaClip(sigma=3.0, maxiters=5)).calc_background(x)
    assert got == pytest.approx(float(want), abs=1e-4)


def test_kde_mode_matches_statsmodels():
    from statsmodels.nonparametric.kde import KDEUnivariate

    for draw in (RNG.gamma(5.0, 1.0, 20000), RNG.normal(2.3, 1e-3, 3000),
                 np.concatenate([RNG.normal(0, 1e-4, 5000), RNG.uniform(0, 0.05, 300)])):
        kde = KDEUnivariate(draw.astype(float))
        kde.fit(gridsize=2000)
        want = kde.support[np.argmax(kde.density)]
        spacing = kde.support[1] - kde.support[0]
        s = np.sort(draw).astype(np.float32)
        got = stats.kde_mode_sorted(s, len(s), np.empty(4096), np.empty(4096), 8.0)
        assert abs(got - want) <= spacing + 1e-6 * abs(want)
        assert stats.normal_reference_bandwidth(s, len(s)) == pytest.approx(kde.bw, rel=1e-3)


# -- tiles ------------------------------------------------------------------------------------
def _frame(size=2048, camera=2, ccd=1, seed=11):
    from pipeline.simulate import build_model

    model = build_model(frames=1, size=size, camera=camera, ccd=ccd, seed=seed)
    return model.science(model.render(0)[0]).astype(np.float32)


def test_tile_term_matches_photutils_background2d():
    """Same statistics, IDW fill, 3×3 filter and zoom as photutils (REFLECT boundary,
    photutils' edge handling, clipped) on a full frame with one excluded tile."""
    from astropy.stats import SigmaClip
    from photutils.background import Background2D, SExtractorBackground

    img = _frame()
    flags = kflags.mask(img)
    flags[:40, 2048 - 64:] = 1      # excludes the corner tile: its 10 nearest tiles are tie-free
    sc = SigmaClip(sigma=3.0, maxiters=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = Background2D(img, (64, 64), filter_size=(3, 3), sigma_clip=sc,
                           bkg_estimator=SExtractorBackground(sigma_clip=sc), mask=flags > 0,
                           exclude_percentile=50)
        want_mesh, want_image = ref.background_mesh, ref.background
    geom = kbg.geometry(img.shape)                       # no boresight: tile term only
    mesh, table, has_radial = kbg.fit(img, flags, geom, boundary=kbg.REFLECT)
    assert not has_radial and not table.any()
    np.testing.assert_allclose(mesh, want_mesh, atol=2e-3)
    np.testing.assert_allclose(kbg.render(mesh, table, geom, clip=True, boundary=kbg.REFLECT),
                               want_image, atol=3e-3)


def test_idw_fill_matches_shepard():
    from photutils.utils import ShepardIDWInterpolator

    mesh = RNG.normal(100, 3, (9, 11))
    mesh[0, 0] = mesh[8, 10] = np.nan                    # grid corners: no distance ties
    good = ~np.isnan(mesh)
    interp = ShepardIDWInterpolator(np.argwhere(good), mesh[good])
    want = interp(np.argwhere(~good), n_neighbors=10, power=1.0)
    filled = mesh.copy()
    tiles.fill_excluded(filled, 10, 1.0)
    np.testing.assert_allclose(filled[~good], want, rtol=1e-12)


def test_median3x3_matches_generic_filter():
    mesh = RNG.normal(0, 1, (7, 9))
    out = np.empty_like(mesh)
    tiles.median3x3(mesh, False, out)
    want = generic_filter(mesh, np.nanmedian, size=3, mode="constant", cval=np.nan)
    np.testing.assert_allclose(out, want, rtol=1e-12)
    # linear continuation: a plane is left exactly as it is, edges included
    plane = np.add.outer(np.arange(7) * 0.7, np.arange(9) * -1.3) + 5
    tiles.median3x3(plane, True, out)
    np.testing.assert_allclose(out, plane, atol=1e-12)


@pytest.mark.parametrize("grid", [(32, 32), (8, 12), (16, 9)])
def test_bspline_matches_scipy_zoom(grid):
    mesh = RNG.normal(100, 5, grid)
    coef = kbg.coefficients(mesh, tiles.REFLECT)
    iy, wy = tiles.axis_weights(grid[0] * 64, 64)
    ix, wx = tiles.axis_weights(grid[1] * 64, 64)
    out = np.empty((grid[0] * 64, grid[1] * 64))
    tiles.interpolate_grid(coef, iy, wy, ix, wx, -np.inf, np.inf, out)
    want = zoom(mesh, 64, order=3, mode="reflect", grid_mode=True)
    np.testing.assert_allclose(out, want, atol=1e-6 * 100)


def test_linear_boundary_reproduces_a_plane():
    mesh = np.add.outer(np.arange(6) * 2.0, np.arange(5) * -0.5) + 100
    iy, wy = tiles.axis_weights(6 * 64, 64)
    ix, wx = tiles.axis_weights(5 * 64, 64)
    out = np.empty((6 * 64, 5 * 64))
    tiles.interpolate_grid(kbg.coefficients(mesh, tiles.LINEAR), iy, wy, ix, wx,
                           -np.inf, np.inf, out)
    r, c = np.mgrid[0:6 * 64, 0:5 * 64]
    plane = 100 + 2.0 * ((r + 0.5) / 64 - 0.5) - 0.5 * ((c + 0.5) / 64 - 0.5)
    np.testing.assert_allclose(out, plane, atol=1e-9)


# -- radial ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [4, 5, 9, 38])
def test_spline_matches_interpolated_univariate_spline(n):
    x = np.sort(RNG.uniform(2400, 3000, n))
    y = RNG.normal(2, 0.3, n)
    m2 = np.empty(n)
    radial.spline_not_a_knot(x, y, m2)
    ref = InterpolatedUnivariateSpline(x, y, k=3, ext=3)
    t = np.linspace(x[0], x[-1], 500)
    got = np.array([radial.spline_eval(x, y, m2, v) for v in t])
    np.testing.assert_allclose(got, ref(t), atol=1e-10)


def test_running_median_is_tasoc_move_median_central():
    x = RNG.normal(0, 1, 15)
    x[[0, 6, 7, 14]] = np.nan

    def tasoc(v):                      # move_median_central(v, 3) written out
        out = np.empty_like(v)
        for i in range(len(v)):
            w = v[max(0, i - 1):i + 2]
            out[i] = np.nanmedian(w) if np.isfinite(w).any() else np.nan
        return out

    got = np.empty_like(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        radial.running_median3(x, False, got)
        np.testing.assert_allclose(got, tasoc(x), equal_nan=True)


def test_annuli_match_binned_statistic():
    shape, origin, bore = (300, 400), (20, 30), (700.0, 900.0)
    n_bins = radial.n_bins_for(shape, origin, bore, r_cut=600.0, step=15.0)
    order, start, rad = radial.annulus_pixels(shape[0], shape[1], float(origin[0]),
                                              origin[1] + 44.0, bore[1], bore[0], 600.0, 15.0,
                                              n_bins)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    r = np.hypot(xx + origin[1] + 44 - bore[0], yy + origin[0] - bore[1])
    bins = np.arange(600.0, r.max() + 15, 15.0)
    counts, _, number = binned_statistic(r.ravel(), r.ravel(), "count", bins=bins)
    assert n_bins == len(bins) - 1
    np.testing.assert_array_equal(np.diff(start), counts)
    for k in (0, n_bins // 2, n_bins - 1):
        assert set(order[start[k]:start[k + 1]]) == set(np.flatnonzero(number == k + 1))


def test_radial_profile_is_tasoc_kde_mode_on_flat_annuli():
    """Without a prior, the per-annulus statistic is TASOC's: the statsmodels KDE mode
    of log10 flux per annulus (binned_statistic with _reduce_mode)."""
    from statsmodels.nonparametric.kde import KDEUnivariate

    shape, bore = (400, 400), (900.0, 1000.0)
    geom = kbg.geometry(shape, (0, 0), bore, r_cut=700.0)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    r = np.hypot(xx + 44 - bore[0], yy - bore[1])
    rng = np.random.default_rng(5)
    level = 200 + 0.002 * (np.floor((r - 700) / 15) * 15) ** 2 * (r > 700)   # flat per annulus
    img = (level + rng.normal(0, 2, shape)).astype(np.float32)
    flags = kflags.mask(img)
    prof = np.empty(geom.n_bins)
    radial.annulus_profile(img.ravel(), flags.ravel(), np.zeros(len(geom.order)), geom.order,
                           geom.start, geom.rad, None, geom.t0, geom.dt, True, 1, prof)

    def reduce_mode(v):
        kde = KDEUnivariate(np.asarray(v, dtype=float))
        kde.fit(gridsize=2000)
        return kde.support[np.argmax(kde.density)]

    bins = np.arange(700.0, r.max() + 15, 15.0)
    want, _, _ = binned_statistic(r.ravel(), np.log10(img.ravel()), reduce_mode, bins=bins)
    counts = np.diff(geom.start)
    np.testing.assert_array_equal(np.isfinite(prof), counts > 0)
    big = counts >= 30
    assert big.sum() >= 10
    spread = np.array([np.ptp(np.log10(img.ravel()[geom.order[a:b]]))
                       for a, b in zip(geom.start[:-1], geom.start[1:]) if b - a >= 30])
    # statsmodels' grid spans the full sample range in 2000 points; ours is finer
    assert np.all(np.abs(prof[big] - want[big]) <= 2 * spread / 1999)


# -- smoothing ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cadence", [1800.0, 600.0, 200.0])
def test_time_smoothing_window_and_gaps(cadence):
    n_win = smoothing.window_frames(cadence)
    assert n_win == {1800.0: 3, 600.0: 9, 200.0: 27}[cadence]
    t = np.concatenate([np.arange(60), np.arange(70, 100)]) * cadence / 86400.0 + 1500.0
    seg = smoothing.segments(t)
    x = RNG.normal(size=(len(t), 4, 3))
    x[[5, 40, 41], 1, 2] = np.nan
    w = n_win // 2
    want = np.empty_like(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(len(t)):
            sel = [j for j in range(len(t)) if abs(j - k) <= w and seg[j] == seg[k]]
            want[k] = np.nanmean(x[sel], axis=0)
    np.testing.assert_allclose(smoothing.smooth(x, w, seg), want, atol=1e-12)
    # any sub-range with its halo gives the same frames (what each stage task does)
    lo, hi = 17, 50
    a, b = max(lo - w, 0), min(hi + w, len(t))
    np.testing.assert_allclose(smoothing.smooth(x[a:b], w, seg[a:b], lo - a, hi - a),
                               want[lo:hi], atol=1e-12)



def test_good_frames_never_average_bad_ones():
    """A good frame's window holds good frames only; a bad frame (scattered light)
    is smoothed over its whole window — the step at the episode's edge must not leak
    into the good neighbours, within segments and across a task's halo."""
    n, w = 40, 1
    x = np.where(np.arange(n) < 15, 100.0, 160.0)[:, None] + RNG.normal(0, 0.1, (n, 2))
    good = np.arange(n) < 15                           # frames 15.. hold scattered light
    good[30:] = True
    x[30:] -= 60.0
    out = smoothing.smooth_good(x, w, good)
    np.testing.assert_allclose(out[14], x[13:15].mean(axis=0), atol=1e-12)   # not x[15]
    np.testing.assert_allclose(out[30], x[30:32].mean(axis=0), atol=1e-12)   # not x[29]
    np.testing.assert_allclose(out[15], x[14:17].mean(axis=0), atol=1e-12)   # bad: everything
    np.testing.assert_allclose(out[5], smoothing.smooth(x, w)[5], atol=1e-12)
    np.testing.assert_allclose(smoothing.smooth_good(x[10:25], w, good[10:25], None, 3, 12),
                               out[13:22], atol=1e-12)

# -- flags -------------------------------------------------------------------------------------
def test_mask_flags():
    img = RNG.normal(100, 1, (50, 60)).astype(np.float32)
    img[3, 4], img[5, 6], img[7, 8] = np.nan, 9e4, -1.0
    flags = kflags.mask(img, rects=np.array([[10, 12, 20, 25]]))
    assert flags[3, 4] == flags[5, 6] == flags[7, 8] == kflags.NOT_USED
    assert np.all(flags[10:12, 20:25] == kflags.NOT_USED | kflags.MANUAL_EXCLUDE)
    assert np.count_nonzero(flags) == 3 + 10


def test_median_filter_matches_scipy():
    img = RNG.normal(0, 3, (200, 230)).astype(np.float32)
    img[50:70, 60:90] += 300
    img[120:125, :] -= 2500                               # beyond the clamp
    got = kflags.dequantise(kflags.median_filter(img, 15))
    want = median_filter(img, size=15, mode="reflect")
    inside = np.abs(want) < kflags.Q_RANGE
    assert np.max(np.abs(got - want)[inside]) <= kflags.QUANTUM / 2 + 1e-6
    assert np.all(got[~inside] <= -kflags.Q_RANGE + kflags.QUANTUM)
    # non-finite values are left out of the window
    img[100, 100] = np.nan
    got = kflags.dequantise(kflags.median_filter(img, 15))
    assert np.isfinite(got).all()
