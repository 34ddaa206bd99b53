"""K2P2 kernels against the libraries TASOC uses: scikit-learn's DBSCAN, scipy's
labelling and Gaussian filter, scikit-image's peak_local_max and watershed, and
statsmodels' KDE — on random images, simulated sum images and hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from k2p2_fixtures import reference_module, sum_image
from kernels import k2p2
from kernels.labels import flood, flood_clusters, label8



def _partition(labels, mask):
    """Canonical form of a labelling restricted to ``mask``: the sets of pixels."""
    lab = labels[mask]
    pix = np.flatnonzero(mask)
    return sorted(tuple(pix[lab == v]) for v in np.unique(lab))


@pytest.fixture(scope="module")
def field():
    """A 256×256 simulated sum image (default star density) with a saturated star."""
    from pipeline.simulate import build_model, make_stars, random_stars

    rng = np.random.default_rng(11)
    stars = random_stars(256, rng)
    extra = make_stars([128.3], [101.6], tmag=[5.2], id=[10_000])
    from astropy.table import vstack

    model = build_model(frames=2, size=256, seed=11, stars=vstack([stars, extra]))
    return model, sum_image(model, n_frames=2, n_noise=10, seed=3)


@pytest.fixture(scope="module")
def reference():
    return reference_module()


# ---------------------------------------------------------------- DBSCAN on the grid
@pytest.mark.parametrize("density", [0.12, 0.3, 0.55])
def test_grid_dbscan_equals_sklearn_core_clusters(density):
    from sklearn.cluster import DBSCAN

    rng = np.random.default_rng(int(density * 100))
    image = rng.random((90, 70))
    cut = 1.0 - density
    above, core = k2p2.above_core(image, cut, 4)
    clusters, n = label8(core)
    ys, xs = np.nonzero(image > cut)
    db = DBSCAN(eps=np.sqrt(2.0), min_samples=4).fit(np.c_[xs, ys])
    want_core = np.zeros(image.shape, bool)
    want_core[ys[db.core_sample_indices_], xs[db.core_sample_indices_]] = True
    np.testing.assert_array_equal(core, want_core)
    want = np.zeros(image.shape, np.int64)
    want[ys, xs] = db.labels_ + 1
    assert _partition(clusters, core) == _partition(want, core)
    # same numbering: both number clusters by their first pixel in raster order
    np.testing.assert_array_equal(clusters[core], want[core])
    # border points: each goes to the lowest-numbered cluster with a core neighbour
    border = (image > cut) & ~core & (want > 0)
    got = np.array([k2p2._border_owner(above, core, clusters, r, c) for r, c in zip(*np.nonzero(border))])
    np.testing.assert_array_equal(got, want[border])


def test_grid_dbscan_equals_sklearn_on_a_sum_image(field):
    from sklearn.cluster import DBSCAN

    _, image = field
    image = image.astype(np.float64)
    cut = k2p2.threshold(image)[0]
    _, core = k2p2.above_core(image, cut, 4)
    clusters, n = label8(core)
    ys, xs = np.nonzero(image > cut)
    db = DBSCAN(eps=np.sqrt(2.0) + np.finfo(float).eps, min_samples=4).fit(np.c_[xs, ys])
    want = np.zeros(image.shape, np.int64)
    want[ys, xs] = db.labels_ + 1
    want_core = np.zeros(image.shape, bool)
    want_core[ys[db.core_sample_indices_], xs[db.core_sample_indices_]] = True
    np.testing.assert_array_equal(core, want_core)
    assert n == len(np.unique(want[core]))
    np.testing.assert_array_equal(clusters[core], want[core])


def test_label8_matches_scipy():
    rng = np.random.default_rng(1)
    for density in (0.2, 0.45, 0.7):
        mask = rng.random((64, 50)) < density
        got, n = label8(mask)
        want, m = ndimage.label(mask, structure=np.ones((3, 3)))
        assert n == m
        np.testing.assert_array_equal(got, want)     # both number in raster order


# ---------------------------------------------------------------- watershed
def _smooth_field(rng, shape=(60, 60), n=12):
    y, x = np.mgrid[:shape[0], :shape[1]]
    img = np.zeros(shape)
    for _ in range(n):
        r, c, s, a = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(1, 4), rng.uniform(1, 10)
        img += a * np.exp(-0.5 * ((y - r) ** 2 + (x - c) ** 2) / s ** 2)
    return img + 0.01 * rng.standard_normal(shape)


def test_flood_matches_skimage_watershed():
    from skimage.segmentation import watershed

    rng = np.random.default_rng(5)
    for _ in range(5):
        img = _smooth_field(rng)
        mask = img > np.quantile(img, 0.4)
        markers = np.zeros(img.shape, np.int32)
        pts = np.argwhere(mask)[rng.choice(mask.sum(), 6, replace=False)]
        markers[tuple(pts.T)] = np.arange(1, 7)
        want = watershed(-img, markers, mask=mask)
        np.testing.assert_array_equal(flood(img, mask, markers), want)
        clusters, n = label8(mask)
        np.testing.assert_array_equal(flood_clusters(img, clusters, n, markers), want)


def test_peaks_match_skimage_per_cluster(field):
    """Markers: 3×3 maxima of each cluster's flux blurred by σ 0.5 (scipy) =
    peak_local_max(footprint 3×3, exclude_border False, threshold_rel 0)."""
    from skimage.feature import peak_local_max

    _, image = field
    image = image.astype(np.float64)
    cut = k2p2.threshold(image)[0]
    _, core = k2p2.above_core(image, cut, 4)
    clusters, n = label8(core)
    peak, bz = k2p2.find_peaks(image, clusters, n, k2p2.gaussian_weights(0.5), 0.0)
    boxes = ndimage.find_objects(clusters)
    for q in range(1, n + 1):
        z = np.where(clusters == q, image, 0.0)
        blurred = ndimage.gaussian_filter(z, 0.5)
        np.testing.assert_allclose(bz[clusters == q], blurred[clusters == q], rtol=1e-12, atol=1e-12)
        sl = tuple(slice(max(s.start - 3, 0), s.stop + 3) for s in boxes[q - 1])
        want = peak_local_max(blurred[sl], exclude_border=False, threshold_rel=0,
                              footprint=np.ones((3, 3)))
        want = {(int(r) + sl[0].start, int(c) + sl[1].start) for r, c in want}
        got = {tuple(p) for p in np.argwhere(peak & (clusters == q))}
        assert got == want, q


def test_watershed_splits_two_stars_and_keeps_one_whole():
    y, x = np.mgrid[:30, :40]
    blob = lambda r, c, a: a * np.exp(-0.5 * ((y - r) ** 2 + (x - c) ** 2) / 0.9 ** 2)  # noqa: E731
    image = (blob(15, 12, 100) + blob(15, 16.5, 30) + blob(15, 30, 50)).astype(np.float32)
    ap, n, *_ = k2p2.segment(image, 0.5)
    assert n == 3
    assert len({ap[15, 12], ap[15, 16], ap[15, 30]}) == 3 and 0 not in (ap[15, 12], ap[15, 16])
    # with a catalog naming only the bright one, the pair stays one aperture
    ap, n, *_ = k2p2.segment(image, 0.5, stars=([15.0, 15.0], [12.0, 30.0], [9.0, 10.0]))
    assert n == 2 and ap[15, 12] == ap[15, 16] != ap[15, 30]


# ---------------------------------------------------------------- threshold
def test_threshold_matches_statsmodels(field, reference):
    _, image = field
    cut, mode, sigma, h = k2p2.threshold(image)
    want = reference.reference_threshold(image.astype(np.float64))
    assert h == pytest.approx(want[3], rel=1e-9)
    assert abs(mode - want[1]) < 0.02 * sigma
    assert sigma == pytest.approx(want[2], rel=1e-3)
    assert abs(cut - want[0]) < 0.02 * sigma
    pos = k2p2.threshold(image, positive_only=True)
    want_pos = reference.reference_threshold(image.astype(np.float64), positive_only=True)
    assert abs(pos[0] - want_pos[0]) < 0.02 * sigma


def test_threshold_on_pure_noise():
    """mode + 0.8 σ on white noise; TASOC's "values > 0" would put it near 0.1 σ."""
    rng = np.random.default_rng(2)
    image = (5.0 + 2.0 * rng.standard_normal((400, 400))).astype(np.float32)
    image[:20, :20] = 1e5                                     # saturated, trimmed
    cut, mode, sigma, _ = k2p2.threshold(image)
    assert mode == pytest.approx(5.0, abs=0.05)
    assert sigma == pytest.approx(2.0, rel=0.02)
    assert cut == pytest.approx(5.0 + 0.8 * 2.0, abs=0.08)
    noise = image - 5.0
    assert k2p2.threshold(noise, positive_only=True)[0] < 0.5
    assert np.isnan(k2p2.threshold(np.full((4, 4), np.nan, np.float32))[0])


# ---------------------------------------------------------------- whole method
def _aperture_sets(ap, n):
    offsets, rows, cols, *_ = k2p2.aperture_table(ap, n, np.zeros(ap.shape))
    return [frozenset(zip(rows[offsets[u]:offsets[u + 1]].tolist(),
                          cols[offsets[u]:offsets[u + 1]].tolist())) for u in range(1, n + 1)]


@pytest.mark.parametrize("with_catalog", [False, True])
def test_segment_equals_reference_route(field, reference, with_catalog):
    """Same apertures as scikit-learn DBSCAN + scikit-image watershed, except where
    TASOC lets a mask grow into another one (hole filling, bleed runs): ours never
    take another aperture's pixels."""
    model, image = field
    cut = k2p2.threshold(image)[0]
    cat = None
    if with_catalog:
        cat = tuple(np.asarray(model.stars[k], np.float64) for k in ("row", "col", "tmag"))
    ap, n, *_ = k2p2.segment(image, cut, stars=cat)
    mine = _aperture_sets(ap, n)
    masks, _ = reference.reference_masks(image.astype(np.float64), catalog=cat, cut=cut)
    theirs = [frozenset(zip(r.tolist(), c.tolist())) for r, c in masks]
    assert len(mine) == len(theirs) > 50
    same = set(mine) & set(theirs)
    assert len(same) >= 0.98 * len(mine)
    for t in set(theirs) - same:
        # its counterpart is one of ours that no reference aperture equals (a TASOC
        # mask that grew into a neighbour can overlap that neighbour more than its own)
        m = max(set(mine) - same, key=lambda a: len(a & t))
        assert m <= t, "ours may only lack pixels"
        extra = t - m
        assert all(ap[p] not in (0, ap[next(iter(m))]) for p in extra), \
            "the pixels we leave out belong to another aperture"


def test_saturated_star_is_one_aperture_with_its_bleed_columns(field):
    model, image = field
    cut = k2p2.threshold(image)[0]
    ap, n, *_ = k2p2.segment(image, cut)
    k = int(np.nonzero(np.asarray(model.stars["tmag"]) < 6)[0][0])
    star = ap[int(round(model.stars["row"][k])), int(round(model.stars["col"][k]))]
    assert star > 0
    truth = model.star_image(0) + model.background(0)
    saturated = truth >= 0.999 * model.sat_level
    assert saturated.sum() > 3
    assert np.all(ap[saturated] == star), "every saturated pixel is in the star's aperture"
    assert (ap == star).sum() > 50


def test_holes_filled_small_regions_dropped():
    image = np.zeros((20, 20), np.float32)
    image[4:11, 4:11] = 10.0
    image[7, 7] = -1.0                         # a hole inside the star
    image[15:17, 15] = 10.0                    # 2 px: not even a cluster
    image[14:16, 1:3] = 10.0                   # 4 px, all core: kept
    ap, n, *_ = k2p2.segment(image, 1.0)
    assert ap[7, 7] == ap[5, 5] > 0            # the hole is filled
    assert ap[15, 15] == 0
    assert (ap == ap[14, 1]).sum() == 4
    ap, n, *_ = k2p2.segment(image, 1.0, min_pixels=5)
    assert ap[14, 1] == 0 and ap[5, 5] > 0


def test_open_window_edges_mark_cut_clusters():
    image = np.zeros((30, 30), np.float32)
    image[10:15, 0:5] = 10.0                   # touches the left side
    image[10:15, 15:20] = 10.0                 # well inside
    ap, n, ap_cluster, complete, clusters = k2p2.segment(image, 1.0, [False, False, True, False])
    assert not complete[clusters[12, 2]] and complete[clusters[12, 17]]
    ap, n, ap_cluster, complete, clusters = k2p2.segment(image, 1.0)
    assert complete[1:].all()
