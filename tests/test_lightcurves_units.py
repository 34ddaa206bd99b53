"""Light-curve building blocks: statistics, spectrum, documents, apertures/tiles, the
reader object — no cube needed (the catalog tests use the embedded server)."""

from __future__ import annotations

import math

import bson
import numpy as np
import pytest

from pipeline.lightcurves import Aperture, LightCurve, apertures_from_documents, load_lightcurve
from pipeline.lightcurves import quality as q
from pipeline.lightcurves.apertures import plan_tiles
from pipeline.lightcurves.documents import (build_document, decode_array, encode_array,
                                            write_documents)
from pipeline.lightcurves.spectrum import analyse
from pipeline.lightcurves.stats import rms_timescale, summary

CADENCE = 200.0 / 86400.0


def _series(n=12000, cadence=CADENCE, sigma=500.0, seed=0):
    rng = np.random.default_rng(seed)
    t = 2000.0 + np.arange(n) * cadence
    return t, rng.normal(0.0, sigma, n)


def test_rms_hour_and_ptp_of_white_noise():
    # 200-s cadence: 18 points per hour → σ/√18 (mean of 8 series: one MAD-based rms of
    # 666 bins scatters by 5.5 %); ptp is √2·σ
    rms = [summary(*(lambda t, y: (t, 1e5 * (1 + y * 1e-6)))(*_series(sigma=1000.0, seed=k)),
                   np.zeros(12000, np.int32))["rms_hour_ppm"] for k in range(8)]
    assert np.mean(rms) == pytest.approx(1000 / math.sqrt(18), rel=0.05)
    t, y = _series(n=12000, sigma=1000.0)
    flux = 1e5 * (1 + y * 1e-6)
    s = summary(t, flux, np.zeros(len(t), np.int32))
    assert s["ptp_ppm"] == pytest.approx(1000 * math.sqrt(2), rel=0.03)
    assert s["median_flux"] == pytest.approx(1e5, rel=1e-3) and s["n_good"] == 12000
    # bad cadences are left out; a flagged outlier does not move anything
    flux[100] = 1e9
    qual = np.zeros(len(t), np.int32)
    qual[100] = 32
    assert summary(t, flux, qual)["rms_hour_ppm"] == pytest.approx(s["rms_hour_ppm"], rel=1e-3)
    # 30-min cadence: two points per 1-h bin
    t2, y2 = _series(n=2000, cadence=1800 / 86400, sigma=1000.0, seed=3)
    assert rms_timescale(t2, y2) == pytest.approx(1000 / math.sqrt(2), rel=0.1)


def test_spectrum_amplitudes_parseval_and_prewhitening():
    n, cad = 1300, 1800.0
    t, noise = _series(n=n, cadence=cad / 86400, sigma=300.0, seed=1)
    ts = (t - t[0]) * 86400
    y = (4000 * np.sin(2 * np.pi * 100e-6 * ts + 0.4) + 250 * np.sin(2 * np.pi * 37.3e-6 * ts)
         + 150 * np.sin(2 * np.pi * 101.9e-6 * ts + 1.0) + noise)
    s = analyse(t, y)
    T = ts[-1]
    assert s["resolution_uhz"] == pytest.approx(1e6 / T)
    assert s["nyquist_uhz"] == pytest.approx(1e6 / (2 * cad))
    peaks = s["peaks"]
    found = [p["frequency_uhz"] for p in peaks]
    # all three, including the weak one next to the strong one's sidelobes
    for f, a in ((100.0, 4000), (37.3, 250), (101.9, 150)):
        k = int(np.argmin(np.abs(np.array(found) - f)))
        assert abs(found[k] - f) < 0.2 * s["resolution_uhz"]
        assert peaks[k]["amplitude_ppm"] == pytest.approx(a, abs=4 * 300 * math.sqrt(1 / n))
    assert peaks[0]["snr"] > 100
    # noise level: mean amplitude of white noise is σ·√(π/N)
    assert s["noise_ppm"] == pytest.approx(300 * math.sqrt(math.pi / n), rel=0.15)
    # Parseval: the power density integrates to the variance
    assert s["mean_psd_ppm2_uhz"] * s["nyquist_uhz"] == pytest.approx(np.var(y - y.mean()), rel=0.03)
    # pure noise: nothing significant
    assert analyse(t, noise)["peaks"] == []


def test_spectrum_binning_and_outlier_clip():
    t, y = _series(n=12000, sigma=100.0, seed=2)
    ts = (t - t[0]) * 86400
    y = y + 2000 * np.sin(2 * np.pi * 1234.5e-6 * ts)
    y[500] += 2e5                      # one wild point (a bad background frame)
    s = analyse(t, y, max_points=4000)
    assert s["bin"] > 1 and len(s["frequency_uhz"]) <= 4000
    assert s["n_points"] > 4000 and s["n_clipped"] == 1
    assert s["peaks"][0]["frequency_uhz"] == pytest.approx(1234.5, abs=0.05)
    assert s["amplitude_ppm"].max() == pytest.approx(2000, rel=0.02)     # max-binned
    assert analyse(t, y, clip=None)["noise_ppm"] > 2 * s["noise_ppm"]



def test_outlier_clip_on_a_smooth_high_snr_light_curve():
    """A slow, noise-free-looking pulsation: most points equal their 5-point running
    median, so a MAD of those residuals is 0; the two wild frames must still go."""
    t = 2000.0 + np.arange(130) / 48.0
    y = 3e4 * np.sin(2 * np.pi * t / 0.8) + np.random.default_rng(3).normal(0, 50, 130)
    y[[14, 15]] -= 3.4e5
    s = analyse(t, y)
    assert s["n_clipped"] == 2
    assert s["peaks"] and s["peaks"][0]["frequency_uhz"] == pytest.approx(1e6 / (0.8 * 86400), abs=1.0)

def test_quality_bits():
    frame_q = np.array([0, 32, 0, 0])
    pixq = np.array([[0, 0, 4, 1]], np.uint8)
    nbad = np.array([[0, 0, 0, 2]])
    out = q.lightcurve_quality(frame_q, pixq, nbad)
    assert out.tolist() == [[0, 32, q.BACKGROUND_SHENANIGANS, q.MISSING_PIXELS]]
    assert q.good_cadences(out[0], np.ones(4)).tolist() == [True, False, False, False]
    assert q.decode(q.BACKGROUND_SHENANIGANS | 32) == ["momentum dump", "background shenanigans"]


def test_array_encoding_roundtrip():
    for a in (np.arange(5, dtype=">f8"), np.arange(6, dtype=np.int16).reshape(2, 3),
              np.array([1, 2], np.uint8)):
        d = encode_array(a)
        assert d["dtype"][0] in "<|"
        b = decode_array(d)
        np.testing.assert_array_equal(a, b)
        assert b.flags.writeable


def _document(n=12000, label=7, flux_level=1e4, seed=0):
    t, y = _series(n=n, seed=seed)
    flux = flux_level * (1 + y * 1e-6)
    quality = np.zeros(n, np.int32)
    series = {"time": t, "cadenceno": np.arange(n), "flux": flux, "flux_err": np.full(n, 5.0),
              "flux_bkg": np.full(n, 300.0), "centroid_row": np.full(n, 100.2),
              "centroid_col": np.full(n, 200.7), "quality": quality,
              "pixel_quality": np.zeros(n, np.uint8), "n_bad_pixels": np.zeros(n, np.int32)}
    stats = summary(t, flux, quality)
    spec = analyse(t, (flux / stats["median_flux"] - 1) * 1e6)
    ap = Aperture(label, [100, 100, 101], [200, 201, 200], tile="t0", meta={"flux": 1.0})
    return build_document(sector=14, camera=2, ccd=3, label=label, cube="s0014-2-3", tile="t0",
                          aperture=ap, series=series, stats=stats, spectrum=spec, ra=10.0, dec=-5.0,
                          bitmask=q.DEFAULT_BITMASK)


def test_document_of_a_200s_sector_is_compact():
    doc = _document()
    size = len(bson.encode(doc))
    assert size < 1_000_000, size          # far under MongoDB's 16 MB
    assert doc["spectrum"]["bin"] > 1


def test_upserts_replace_and_reader(catalog):
    docs = [_document(n=2000, label=k, seed=k) for k in (1, 2, 3)]
    r = write_documents(catalog.lightcurves, docs)
    assert r == {"upserted": 3, "matched": 0}
    docs2 = [_document(n=2000, label=k, flux_level=2e4, seed=k) for k in (1, 2, 3)]
    r = write_documents(catalog.lightcurves, docs2, max_batch_bytes=1)   # one op per batch
    assert r == {"upserted": 0, "matched": 3}
    assert catalog.lightcurves.count_documents({}) == 3
    lc = load_lightcurve(catalog, 14, 2, 3, 2)
    assert lc.meta["median_flux"] == pytest.approx(2e4, rel=1e-3)
    assert len(lc) == 2000 and lc.time.dtype == np.float64
    np.testing.assert_allclose(lc.flux, decode_array(docs2[1]["flux"]))
    text = repr(lc)
    assert "s0014 2-3 #2" in text and "2000 cadences" in text and "RA 10.00000" in text
    rel = lc.normalize()
    assert np.median(rel.flux) == pytest.approx(1.0) and rel.unit == ""
    ppm = lc.normalize("ppm")
    assert abs(np.median(ppm.flux)) < 1e-6
    assert lc.spectrum is not None and len(lc.spectrum) > 0
    spec = lc.periodogram(oversample=2)
    assert spec.bin == 1 and spec.nyquist == pytest.approx(2500, rel=1e-6)
    assert "µHz" in repr(spec)
    assert lc.columns["centroid_col"][0] == pytest.approx(200.7, abs=1e-4)
    assert lc.meta["aperture"]["rows"].tolist() == [100, 100, 101]
    with pytest.raises(KeyError):
        load_lightcurve(catalog, 14, 2, 3, 99)


def test_upserts_find_their_document_through_the_unique_index(catalog):
    """Every upsert's filter is the indexed key written with $eq: on nx-27017 a bare
    {field: value} filter scans the collection, which made each light-curve write
    O(stored documents) (46 ms at 3,000). Checked on the ops sent to the real server."""
    sent = []

    class Spy:
        full_name = catalog.lightcurves.full_name

        def bulk_write(self, ops, ordered=True):
            sent.extend(ops)
            return catalog.lightcurves.bulk_write(ops, ordered=ordered)

    write_documents(Spy(), [_document(n=50, label=k, seed=k) for k in (1, 2)])
    assert len(sent) == 2 and catalog.lightcurves.count_documents({}) == 2
    for op in sent:
        assert set(op._filter) == {"sector", "camera", "ccd", "label"}
        assert all(set(v) == {"$eq"} for v in op._filter.values()), op._filter


def test_plots():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    lc = LightCurve.from_document(_document(n=500))
    ax = lc.plot()
    assert ax.get_xlabel() == "time [BTJD]" and ax.get_title() == "s0014 2-3 #7"
    assert lc.spectrum.plot(kind="psd").get_ylabel() == "power density [ppm²/µHz]"
    matplotlib.pyplot.close("all")


def test_remove_bad_and_table():
    t = np.arange(5.0)
    lc = LightCurve(t, [1.0, 2.0, np.nan, 4.0, 5.0], quality=[0, 32, 0, 0, q.BACKGROUND_SHENANIGANS],
                    flux_bkg=np.ones(5))
    good = lc.remove_bad()
    assert good.time.tolist() == [0.0, 3.0] and good.flux_bkg.tolist() == [1.0, 1.0]
    assert len(lc.to_table()) == 5
    with pytest.raises(ValueError):
        LightCurve(t, np.ones(4))


def test_apertures_from_documents_and_tiles():
    docs = [
        {"label": 10, "tile": {"row": 0, "col": 0, "size": 512}, "pixels": [[5, 5], [5, 6], [6, 5]],
         "ra": 1.0, "dec": 2.0, "centroid": {"row": 5.3, "col": 5.3}, "parameters": {"x": 1}},
        {"label": 11, "tile": {"row": 0, "col": 0, "size": 512}, "pixels": [[6, 6], [7, 7]]},
        {"label": 12, "tile": {"row": 0, "col": 512, "size": 512}, "rows": [3, 3], "cols": [600, 601]},
        {"label": 13, "pixels": [[5, 6], [9, 9]]},                       # overlaps label 10
        {"label": 14, "pixels": [[900, 900]]},                           # off the cube
    ]
    aps = apertures_from_documents(docs)
    assert aps[0].meta["ra"] == 1.0 and aps[0].meta["centroid_row"] == 5.3
    assert "parameters_x" not in aps[0].meta and "pixels" not in aps[0].meta
    tiles, skipped = plan_tiles(aps, origin=(0, 0), shape=(700, 700))
    assert skipped == [14]
    by_key = {t.key: t for t in tiles}
    assert len(tiles) == 3
    t0 = by_key['{"col": 0, "row": 0, "size": 512}']
    assert t0.region == (5, 8, 5, 8) and t0.labels == [10, 11]
    layers = t0.layers()
    assert len(layers) == 1 and layers[0][0].max() == 2
    # an overlapping aperture goes to a second layer of its own tile
    both, _ = plan_tiles([aps[0], Aperture(13, [5, 9], [6, 9], tile=docs[0]["tile"])], (0, 0), (700, 700))
    assert len(both[0].layers()) == 2
    # cube origin: CCD coordinates → array coordinates
    moved, _ = plan_tiles([aps[2]], origin=(2, 598), shape=(10, 10))
    assert moved[0].region == (1, 2, 2, 4)
