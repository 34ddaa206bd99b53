"""The aperture stage against real services (nx-27017 over TCP, a Dask LocalCluster):
tiling invariance, documents, catalog input, re-runs, and the RY Tau cut-out through
ingest → background → apertures."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from k2p2_fixtures import sum_image
from pipeline.stages.apertures import (LABEL_BASE, aperture_pixels, find_apertures,
                                       load_stars, run_apertures)
from pipeline.store import COMPRESSORS, Cube, Store

SIZE = 640
CUBE = "s0014-1-1"
RYTAU = "tess-s0019-1-3_65.489205_28.443210_10x10_astrocut.fits"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A cube holding only a simulated sum image (the stage reads nothing else) and
    the science-region WCS a frame document of it would carry."""
    from pipeline.simulate import build_model, geometry

    model = build_model(frames=2, size=SIZE, camera=1, ccd=1, sector=14, seed=8)
    image = sum_image(model, n_frames=2, n_noise=10, seed=8)
    store = Store(str(tmp_path_factory.mktemp("store")))
    group = Cube(store, CUBE).create((SIZE, SIZE), {"sector": 14, "camera": 1, "ccd": 1, "kind": "ffi",
                                                    "origin": [0, 0], "shape": [SIZE, SIZE]})
    group.create_array("sumimage", shape=image.shape, chunks=(256, 256), dtype="float32",
                       compressors=COMPRESSORS, dimension_names=("row", "col"))
    group["sumimage"][...] = image
    wcs = geometry.wcs(SIZE, 14, 1, 1).slice((slice(0, SIZE), slice(44, 44 + SIZE)))
    return {"model": model, "image": image, "store": store, "wcs": wcs,
            "header": wcs.to_header(relax=True).tostring(sep="\n")}


def _frame_doc(catalog, sim):
    catalog.frames.insert_one({"file": "sim.fits", "cadenceno": 1, "cube": CUBE, "cube_index": 0,
                               "status": "ingested", "quality": 0, "wcs": sim["header"]})


def _aperture_set(catalog):
    return {(d["label"], tuple(map(tuple, d["pixels"])))
            for d in catalog.apertures.find({}, {"_id": 0, "label": 1, "pixels": 1})}


def _check_documents(sim, catalog, tile):
    docs = list(catalog.apertures.find({}, {"_id": 0}))
    wcs = sim["wcs"]
    image = sim["image"]
    for d in docs[:200]:
        assert (d["sector"], d["camera"], d["ccd"], d["cube"]) == (14, 1, 1, CUBE)
        pix = np.asarray(d["pixels"])
        assert d["n_pixels"] == len(pix) >= 4
        assert d["flux"] == pytest.approx(float(image[pix[:, 0], pix[:, 1]].astype(float).sum()), rel=1e-5)
        b = d["brightest"]
        assert d["label"] == b["row"] * LABEL_BASE + b["col"]
        assert image[b["row"], b["col"]] == image[pix[:, 0], pix[:, 1]].max()
        c = d["centroid"]
        ra, dec = wcs.all_pix2world([c["col"]], [c["row"]], 0)
        assert (c["ra"], c["dec"]) == pytest.approx((ra[0], dec[0]), abs=1e-9)
        assert d["ra"] == c["ra"] and d["dec"] == c["dec"]
        lon, lat = d["position"]["coordinates"]
        assert d["position"]["type"] == "Point" and -180 <= lon <= 180 and lat == d["dec"]
        assert (lon - d["ra"]) % 360 == pytest.approx(0, abs=1e-9)
        assert d["tile"]["size"] == tile
        assert d["tile"]["row"] <= c["row"] + 0.5 < d["tile"]["row"] + tile
        assert d["tile"]["col"] <= c["col"] + 0.5 < d["tile"]["col"] + tile
        assert d["parameters"]["thresh"] == 0.8 and d["parameters"]["method"] == "k2p2"
        assert d["star"] is None


def test_tiling_invariance_and_reruns(sim, catalog, dask_client):
    _frame_doc(catalog, sim)
    seen = {}
    for tile in (256, 512, 2048):
        report = run_apertures(sim["store"], catalog, CUBE, dask_client, tile=tile)
        assert report.write_mode == "transaction"
        assert catalog.apertures.count_documents({}) == report.n_apertures
        seen[tile] = _aperture_set(catalog)
        if tile == 256:
            _check_documents(sim, catalog, tile)
        assert {d["run"] for d in catalog.apertures.find({}, {"run": 1})} == {report.run}
    assert seen[256] == seen[512] == seen[2048]
    assert len(seen[512]) > 1000
    assert report.n_tiles == 1 and report.removed == len(seen[512])
    # the same result as the serial in-memory route, even from 128-px tiles whose
    # 4-px halos must widen wherever a cluster crosses them
    serial, thr, stats = find_apertures(sim["image"], tile=128, halo=4)
    assert report.cut == pytest.approx(thr[0])
    assert {(a["brightest"][0] * LABEL_BASE + a["brightest"][1],
             tuple(zip(a["rows"].tolist(), a["cols"].tolist()))) for a in serial} == seen[512]
    assert stats["widened"] > 10 and stats["max_halo"] > 4
    # the helper for the light-curve stage
    labels, rows, cols = aperture_pixels(catalog, 14, 1, 1)
    assert len(labels) == sum(len(p) for _, p in seen[512])
    assert np.all(np.diff(labels) >= 0)
    back = {}
    for lab, r, c in zip(labels.tolist(), rows.tolist(), cols.tolist()):
        back.setdefault(lab, []).append((r, c))
    assert {(k, tuple(v)) for k, v in back.items()} == seen[512]


@pytest.mark.parametrize("source", ["csv", "collection"])
def test_star_catalog(sim, catalog, dask_client, tmp_path, source):
    _frame_doc(catalog, sim)
    model, wcs = sim["model"], sim["wcs"]
    ra, dec = wcs.all_pix2world(np.asarray(model.stars["col"]), np.asarray(model.stars["row"]), 0)
    table = Table({"id": np.asarray(model.stars["id"]) + 1000, "ra": ra, "dec": dec,
                   "tmag": np.asarray(model.stars["tmag"])})
    if source == "csv":
        stars = tmp_path / "stars.csv"
        table.write(stars, format="ascii.csv")
    else:
        catalog.stars.insert_many([{k: (int(v) if k == "id" else float(v)) for k, v in zip(row.colnames, row)}
                                   for row in table])
        stars = "catalog"
    report = run_apertures(sim["store"], catalog, CUBE, dask_client, tile=512, stars=stars)
    assert report.n_stars == len(table)
    assert report.n_matched >= 0.9 * len(table)
    docs = {d["label"]: d for d in catalog.apertures.find({}, {"_id": 0})}
    # every matched star lies in its aperture and is the brightest catalog star there
    for d in list(docs.values())[:300]:
        if d["star"] is None:
            continue
        s = d["star"]
        pix = {tuple(p) for p in d["pixels"]}
        assert (int(np.floor(s["row"] + 0.5)), int(np.floor(s["col"] + 0.5))) in pix
        k = s["id"] - 1000
        assert s["tmag"] == pytest.approx(float(model.stars["tmag"][k]))
        assert d["parameters"]["catalog"] in ("stars.csv", "stars collection")


def test_star_files_csv_and_fits(sim, tmp_path):
    """Star catalogs as CSV or FITS (any column case), kept when on the cube."""
    wcs = sim["wcs"]
    ra, dec = wcs.all_pix2world([10.0, 300.0, 5000.0], [20.0, 400.0, 10.0], 0)
    table = Table({"ID": [7, 8, 9], "RA": ra, "Dec": dec, "Tmag": [9.0, 10.5, 11.0]})
    table.write(tmp_path / "s.fits")
    table.write(tmp_path / "s.csv", format="ascii.csv")
    for name in ("s.fits", "s.csv"):
        got, source = load_stars(tmp_path / name, None, wcs, (SIZE, SIZE))
        assert source == name and list(got["id"]) == [7, 8]        # the third is off the cube
        np.testing.assert_allclose(got["row"], [20.0, 400.0], atol=1e-6)
        np.testing.assert_allclose(got["col"], [10.0, 300.0], atol=1e-6)
    with pytest.raises(ValueError, match="tmag"):
        load_stars({"ra": ra, "dec": dec}, None, wcs, (SIZE, SIZE))


@pytest.fixture(scope="module")
def rytau(tess_data, tmp_path_factory, mongo_server, dask_client):
    """The RY Tau cut-out ingested and background-corrected (the background stage
    writes the sum image the aperture stage reads)."""
    import uuid

    from pipeline.catalog import Catalog
    from pipeline.stages.background import run_background
    from pipeline.stages.ingest import ingest

    cat = Catalog(mongo_server.url, database=f"test_{uuid.uuid4().hex[:12]}")
    cat.ensure_indexes()
    store = Store(str(tmp_path_factory.mktemp("rytau")))
    report = ingest([str(tess_data / RYTAU)], store, cat, dask_client)
    (cube_id,) = report.cubes
    run_background(store, cube_id, dask_client)
    yield store, cat, cube_id
    cat.client.drop_database(cat.db.name)
    cat.client.close()


def test_rytau_real_pixels(rytau, dask_client):
    store, catalog, cube_id = rytau
    cube = Cube(store, cube_id)
    image = cube.group("r")["sumimage"][...]
    row0, col0 = cube.group("r").attrs["origin"]
    report = run_apertures(store, catalog, cube_id, dask_client)
    assert report.n_apertures >= 2
    docs = list(catalog.apertures.find({"cube": cube_id}, {"_id": 0}))
    # RY Tau: the brightest pixel of the cut-out, at the target's coordinates
    peak = np.unravel_index(np.nanargmax(image), image.shape)
    main = [d for d in docs if [peak[0] + row0, peak[1] + col0] in d["pixels"]]
    assert len(main) == 1
    main = main[0]
    assert abs(main["ra"] - 65.489205) < 21 / 3600 and abs(main["dec"] - 28.443210) < 21 / 3600
    # the fainter neighbours the sum image resolves: other 3×3 local maxima above the cut
    from scipy import ndimage

    peaks = (image == ndimage.maximum_filter(image, 3, mode="nearest")) & (image > report.cut)
    peaks[peak] = False
    assert peaks.sum() >= 2
    inside = {tuple(p) for p in main["pixels"]}
    for r, c in zip(*np.nonzero(peaks)):
        assert (r + row0, c + col0) not in inside, f"RY Tau's aperture swallows the star at {(r, c)}"
    # the neighbour at the cut-out's upper right has an aperture of its own
    assert any(d is not main and [row0 + 1, col0 + 8] in d["pixels"] for d in docs)


def test_rerun_without_transactions_replaces(rytau, dask_client):
    """The path for servers without transactions: upserts by label, then the earlier
    run's leftovers go; never two documents for a label."""
    store, catalog, cube_id = rytau
    first = run_apertures(store, catalog, cube_id, dask_client)
    catalog.apertures.insert_one({"sector": 19, "camera": 1, "ccd": 3, "cube": cube_id,
                                  "label": -1, "pixels": [[0, 0]], "run": "old"})
    again = run_apertures(store, catalog, cube_id, dask_client, transactions=False)
    assert again.write_mode == "upsert" and again.removed == 1
    docs = list(catalog.apertures.find({"cube": cube_id}, {"_id": 0, "label": 1, "run": 1}))
    assert len(docs) == first.n_apertures == again.n_apertures
    assert {d["run"] for d in docs} == {again.run}
    assert len({d["label"] for d in docs}) == len(docs)
