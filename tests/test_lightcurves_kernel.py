"""kernels.photometry against a straightforward numpy implementation."""

from __future__ import annotations

import numpy as np
import pytest

from kernels.photometry import aperture_photometry

EMPTY3 = np.empty((0, 0, 0), np.float32)
EMPTY_FLAGS = np.empty((0, 0, 0), np.uint8)


def reference(flux, err, bkg, flags, labels, n, subtract=True, exclude_bits=0):
    """Per aperture and cadence with numpy masks, one aperture at a time."""
    nt = flux.shape[0]
    out = {k: np.full((n, nt), np.nan) for k in ("flux", "err", "bkg", "crow", "ccol")}
    out["flags"] = np.zeros((n, nt), np.uint8)
    out["bad"] = np.zeros((n, nt), np.int32)
    rr, cc = np.indices(labels.shape)
    for k in range(1, n + 1):
        m = labels == k
        for t in range(nt):
            f = flux[t][m].astype(float)
            b = bkg[t][m].astype(float)
            e = err[t][m].astype(float)
            good = np.isfinite(f) & np.isfinite(b) & np.isfinite(e) & ((flags[t][m] & exclude_bits) == 0)
            out["flags"][k - 1, t] = np.bitwise_or.reduce(flags[t][m]) if m.any() else 0
            out["bad"][k - 1, t] = np.count_nonzero(~good)
            if not good.any():
                continue
            v = f[good] - b[good] if subtract else f[good]
            out["flux"][k - 1, t] = v.sum()
            out["err"][k - 1, t] = np.sqrt(np.sum(e[good] ** 2))
            out["bkg"][k - 1, t] = b[good].sum()
            if v.sum() > 0:
                out["crow"][k - 1, t] = np.sum(v * rr[m][good]) / v.sum()
                out["ccol"][k - 1, t] = np.sum(v * cc[m][good]) / v.sum()
    return out


def _block(rng, nt=7, nr=23, nc=31, n=6):
    flux = rng.normal(100.0, 20.0, (nt, nr, nc)).astype(np.float32)
    flux[:, 5:9, 5:9] += 5000.0
    err = rng.uniform(1.0, 3.0, flux.shape).astype(np.float32)
    bkg = rng.normal(80.0, 2.0, flux.shape).astype(np.float32)
    flags = (rng.random(flux.shape) < 0.05).astype(np.uint8) * 4
    flags |= (rng.random(flux.shape) < 0.05).astype(np.uint8) * 1
    flags |= (rng.random(flux.shape) < 0.03).astype(np.uint8) * 2
    labels = np.zeros((nr, nc), np.int32)
    # disjoint irregular apertures, one touching the region's edge, one of one pixel
    labels[4:10, 4:10] = 1
    labels[0:3, 20:31] = 2
    labels[15, 3] = 3
    labels[12:20, 12:15] = 4
    labels[12:14, 15:18] = 4
    labels[20:23, 25:31] = 5
    labels[2, 2] = 99        # outside 1..n: ignored
    return flux, err, bkg, flags, labels, n


@pytest.mark.parametrize("subtract,exclude_bits", [(True, 0), (False, 0), (True, 2)])
def test_matches_numpy(subtract, exclude_bits):
    rng = np.random.default_rng(1)
    flux, err, bkg, flags, labels, n = _block(rng)
    # NaNs: a whole aperture in one cadence, single pixels elsewhere, a NaN background
    flux[2, 4:10, 4:10] = np.nan
    flux[3, 5, 5] = np.nan
    bkg[4, 13, 13] = np.nan
    err[5, 0, 25] = np.inf
    got = aperture_photometry(flux, err, bkg, flags, labels, n, subtract, exclude_bits)
    want = reference(flux, err, bkg, flags, labels, n, subtract, exclude_bits)
    for k, name in enumerate(("flux", "err", "bkg", "crow", "ccol")):
        np.testing.assert_allclose(got[k], want[name], rtol=1e-10, atol=1e-9, equal_nan=True,
                                   err_msg=name)
    np.testing.assert_array_equal(got[5], want["flags"])
    np.testing.assert_array_equal(got[6], want["bad"])
    # the documented NaN cases
    assert np.isnan(got[0][0, 2]) and got[6][0, 2] == 36
    assert got[6][0, 3] >= 1 and np.isfinite(got[0][0, 3])
    # label 6 has no pixel: all NaN, no flags
    assert np.all(np.isnan(got[0][5])) and not got[5][5].any()


def test_float64_input_and_optional_arrays():
    rng = np.random.default_rng(2)
    flux, err, bkg, flags, labels, n = _block(rng)
    got = aperture_photometry(flux.astype(np.float64), EMPTY3, EMPTY3, EMPTY_FLAGS, labels, n, True)
    want = reference(flux, np.ones_like(err), np.zeros_like(bkg), np.zeros_like(flags), labels, n)
    np.testing.assert_allclose(got[0], want["flux"], rtol=1e-10, equal_nan=True)
    np.testing.assert_allclose(got[3], want["crow"], rtol=1e-10, equal_nan=True)
    assert np.all(np.isnan(got[1][:5])) and np.all(got[2][:5] == 0) and not got[5].any()


def test_centroid_of_a_point_source():
    labels = np.zeros((9, 9), np.int32)
    labels[2:7, 3:8] = 1
    img = np.zeros((1, 9, 9), np.float32)
    img[0, 4, 5] = 100.0
    img[0, 4, 6] = 100.0
    f, _, _, crow, ccol, _, _ = aperture_photometry(img, EMPTY3, EMPTY3, EMPTY_FLAGS, labels, 1, True)
    assert f[0, 0] == 200.0 and crow[0, 0] == 4.0 and ccol[0, 0] == 5.5
    # no positive light: centroid undefined
    _, _, _, crow, _, _, _ = aperture_photometry(-img, EMPTY3, EMPTY3, EMPTY_FLAGS, labels, 1, True)
    assert np.isnan(crow[0, 0])
