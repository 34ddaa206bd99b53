"""simulate → ingest → cube, against real services: nx-27017, moto S3, LocalCluster."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from pipeline.cli import main as cli
from pipeline.io import read_info
from pipeline.simulate import simulate
from pipeline.stages.ingest import UNUSABLE_BIT, ingest
from pipeline.store import Cube, Store

SIZE = 128  # chunks (16, 128, 128): 20 frames span two time chunks


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("sim"), frames=20, size=SIZE, camera=2, ccd=3,
                    sector=14, cadence=1800.0, seed=3)


def _science(path):
    with fits.open(path) as hdul:
        return (hdul[1].data[:SIZE, 44:44 + SIZE].astype("f4"),
                hdul[2].data[:SIZE, 44:44 + SIZE].astype("f4"))


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    return Store.from_settings(request.getfixturevalue("s3_settings"))


def test_cube_equals_fits_bit_for_bit(sim, store, catalog, dask_client):
    report = ingest([str(p) for p in sim.paths], store, catalog, dask_client)
    assert report.count("ingested") == 20 and not report.rejected, report.files
    cube = Cube(store, "s0014-2-3")
    ds = cube.dataset()
    assert ds.sizes == {"time": 20, "row": SIZE, "col": SIZE}
    assert np.all(np.diff(ds.time.values) > 0)
    flux, err = ds.flux.values, ds.flux_err.values
    for i, path in enumerate(sim.paths):
        want_flux, want_err = _science(path)
        assert flux[i].tobytes() == want_flux.tobytes()
        assert err[i].tobytes() == want_err.tobytes()
    # raw zone holds the originals under their own names
    for path in sim.paths:
        key = Store.raw_key(path.name, 14, 2, 3)
        with store.open(key) as f:
            assert f.read() == path.read_bytes()
    # one frame document per cadence, pointing at the cube
    docs = list(catalog.frames.find({"status": "ingested"}).sort("cube_index", 1))
    assert [d["cube_index"] for d in docs] == list(range(20))
    assert [d["file"] for d in docs] == [p.name for p in sim.paths]
    d = docs[0]
    assert (d["sector"], d["camera"], d["ccd"]) == (14, 2, 3)
    assert d["tstart"] < d["time"] < d["tstop"]
    assert d["headers"]["primary"]["TELESCOP"] == "TESS" and "CTYPE1" in d["wcs"]
    np.testing.assert_array_equal(ds.cadenceno.values, [x["cadenceno"] for x in docs])
    np.testing.assert_array_equal(ds.quality.values, [x["quality"] for x in docs])


def test_reingest_is_a_noop(sim, tmp_path, catalog, dask_client):
    store = Store(str(tmp_path / "store"))
    paths = [str(p) for p in sim.paths[:6]]
    ingest(paths, store, catalog, dask_client)
    chunk = store.path("staging/s0014-2-3.zarr/flux/c/0/0/0")
    mtime = store.fs.info(chunk)["mtime"]
    again = ingest(paths, store, catalog, dask_client)
    assert again.count("duplicate") == 6 and again.count("ingested") == 0
    assert store.fs.info(chunk)["mtime"] == mtime
    assert catalog.frames.count_documents({}) == 6
    assert again.cubes == {}


def test_append_leaves_complete_chunks_untouched(sim, tmp_path, catalog, dask_client):
    store = Store(str(tmp_path / "store"))
    cube = Cube(store, "s0014-2-3")
    ingest([str(p) for p in sim.paths[:17]], store, catalog, dask_client)
    depth = cube.time_chunk
    assert depth == 16
    first_chunk = store.path("staging/s0014-2-3.zarr/flux/c/0/0/0")
    before = (open(first_chunk, "rb").read(), store.fs.info(first_chunk)["mtime"])
    report = ingest([str(p) for p in sim.paths[17:]], store, catalog, dask_client)
    assert report.count("ingested") == 3
    assert (open(first_chunk, "rb").read(), store.fs.info(first_chunk)["mtime"]) == before
    ds = cube.dataset()
    assert ds.sizes["time"] == 20
    for i in (0, 16, 17, 19):
        assert ds.flux.values[i].tobytes() == _science(sim.paths[i])[0].tobytes()


def test_bad_files_are_reported_and_the_rest_ingest(sim, tmp_path, catalog, dask_client):
    bad = tmp_path / "bad"
    bad.mkdir()
    truncated = bad / "tess2019200000000-s0014-2-3-0150-s_ffic.fits"
    data = sim.paths[0].read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    not_tess = bad / "kepler.fits"
    hdul = fits.open(sim.paths[1])
    hdul[0].header["TELESCOP"] = "Kepler"
    hdul.writeto(not_tess)
    wrong_shape = bad / "tess2019201000000-s0014-2-3-0150-s_ffic.fits"
    hdul = fits.open(sim.paths[2])
    hdul[1].data = hdul[1].data[:, :100]
    hdul[2].data = hdul[2].data[:, :100]
    hdul.writeto(wrong_shape)
    text = bad / "notes.fits"
    text.write_text("this is not a FITS file\n")

    store = Store(str(tmp_path / "store"))
    good = [str(p) for p in sim.paths[3:8]]
    report = ingest([str(truncated), str(not_tess), str(wrong_shape), str(text)] + good,
                    store, catalog, dask_client)
    by_path = {f.path: f for f in report.files}
    assert by_path[str(truncated)].problem == "truncated"
    assert by_path[str(not_tess)].problem == "not TESS"
    assert by_path[str(wrong_shape)].problem == "wrong shape"
    assert by_path[str(text)].problem == "not TESS"
    for f in report.rejected:
        assert f.path in f.error  # the message names the file
    assert report.count("ingested") == 5
    assert Cube(store, "s0014-2-3").dataset().sizes["time"] == 5
    rejected = {r["file"]: r["problem"] for r in catalog.rejections()}
    assert rejected == {truncated.name: "truncated", not_tess.name: "not TESS",
                        wrong_shape.name: "wrong shape", text.name: "not TESS"}
    assert not store.exists(Store.raw_key(truncated.name, 14, 2, 3))


def test_all_nan_frame_is_flagged_not_lost(sim, tmp_path, catalog, dask_client):
    path = tmp_path / sim.paths[4].name
    with fits.open(sim.paths[4]) as hdul:
        hdul[1].data[:] = np.nan
        hdul.writeto(path)
    store = Store(str(tmp_path / "store"))
    report = ingest([str(p) for p in sim.paths[:4]] + [str(path)], store, catalog, dask_client)
    assert {f.status for f in report.files if f.path != str(path)} == {"ingested"}
    nan_report = next(f for f in report.files if f.path == str(path))
    assert nan_report.status == "rejected" and nan_report.problem == "all-NaN image"
    quality = Cube(store, "s0014-2-3").coords()["quality"]
    assert quality[4] & UNUSABLE_BIT and not any(q & UNUSABLE_BIT for q in quality[:4])


def test_interrupted_run_is_repaired_not_duplicated(sim, tmp_path, catalog, dask_client):
    store = Store(str(tmp_path / "store"))
    paths = [str(p) for p in sim.paths[:5]]
    ingest(paths, store, catalog, dask_client)
    catalog.frames.delete_many({})  # as if the run died before its catalog write
    report = ingest(paths, store, catalog, dask_client)
    assert report.count("repaired") == 5
    assert Cube(store, "s0014-2-3").dataset().sizes["time"] == 5
    assert catalog.frames.count_documents({"status": "ingested"}) == 5


def test_out_of_order_cadence_is_refused(sim, tmp_path, catalog, dask_client):
    store = Store(str(tmp_path / "store"))
    ingest([str(p) for p in sim.paths[5:8]], store, catalog, dask_client)
    report = ingest([str(sim.paths[2])], store, catalog, dask_client)
    assert report.files[0].problem == "out of order"
    assert Cube(store, "s0014-2-3").dataset().sizes["time"] == 3


def test_real_cutouts_ingest(tess_data, tmp_path, catalog, dask_client):
    store = Store(str(tmp_path / "store"))
    files = sorted(str(p) for p in tess_data.glob("*.fits*"))
    report = ingest(files, store, catalog, dask_client)
    assert not report.rejected, [f.error for f in report.rejected]
    ry_tau = next(f for f in report.files if "65.489205_28.443210" in f.path)
    assert ry_tau.cadences == 1155
    ds = Cube(store, ry_tau.cube).dataset()
    assert ry_tau.cube.startswith("s0019-1-3-")
    assert ds.sizes == {"time": 1155, "row": 10, "col": 10}
    assert 1816.0 < float(ds.time[0]) < 1816.2 and 1841.0 < float(ds.time[-1]) < 1841.2
    assert np.all(np.diff(ds.cadenceno.values) > 0)
    with fits.open(ry_tau.path) as hdul:
        table = hdul[1].data
        np.testing.assert_array_equal(ds.flux.values, table["FLUX"].astype("f4"))
    # SPOC TESScut CADENCENO columns are all 0: the reader derives cadence numbers
    np.testing.assert_array_equal(ds.cadenceno.values, read_info(ry_tau.path).cadenceno)
    tpf = next(f for f in report.files if "tess25155310" in f.path)
    assert tpf.cadences == 5 and tpf.cube.startswith("s0001-4-1-")
    s1 = next(f for f in report.files if "s0001-4-3" in f.path)
    assert s1.cadences == 1282 and s1.cube.startswith("s0001-4-3-")
    docs = catalog.frames.find({"file": Path(ry_tau.path).name}).sort("cadenceno", 1)
    docs = list(docs)
    assert len(docs) == 1155 and docs[0]["headers"]["primary"]["SECTOR"] == 19
    assert all(d["headers"] is None and d["headers_cadenceno"] == docs[0]["cadenceno"]
               for d in docs[1:])
    assert docs[0]["ffi_file"].startswith("tess2019332135924-s0019-1-3")


def test_cli_ingest(sim, tmp_path, mongo_server, dask_client, capsys):
    store_dir = tmp_path / "store"
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sim.paths[:3]:
        shutil.copy(p, folder / p.name)
    args = ["ingest", str(folder), "--store", str(store_dir), "--mongo", mongo_server.url,
            "--scheduler", dask_client.scheduler.address]
    assert cli(args) == 0
    out = capsys.readouterr().out
    assert "ingested 3" in out and "cube s0014-2-3: 3 cadences" in out
    assert cli(args) == 0
    assert "duplicate 3" in capsys.readouterr().out


def test_ingest_from_urls_in_the_s3_store(sim, s3_settings, catalog, dask_client):
    """Files already in the object store (as the API's /inject leaves them) are read
    with the store's credentials by the workers."""
    store = Store.from_settings(s3_settings)
    urls = []
    for p in sim.paths[:2]:
        with store.open(f"incoming/{p.name}", "wb") as f:
            f.write(p.read_bytes())
        urls.append(store.url_of(f"incoming/{p.name}"))
    report = ingest(urls, store, catalog, dask_client)
    assert report.count("ingested") == 2, [f.error for f in report.files]
    flux = Cube(store, "s0014-2-3").dataset().flux.values
    assert flux[1].tobytes() == _science(sim.paths[1])[0].tobytes()


def test_same_name_different_bytes_is_a_conflict(sim, tmp_path, catalog, dask_client):
    store = Store(str(tmp_path / "store"))
    ingest([str(sim.paths[0])], store, catalog, dask_client)
    impostor = tmp_path / "other" / sim.paths[0].name
    impostor.parent.mkdir()
    with fits.open(sim.paths[0]) as hdul:
        hdul[1].data[0, 50] += 1.0
        hdul.writeto(impostor)
    twin = tmp_path / "twin" / sim.paths[1].name
    twin.parent.mkdir()
    shutil.copy(sim.paths[1], twin)
    report = ingest([str(impostor), str(sim.paths[1]), str(twin)], store, catalog, dask_client)
    status = {f.path: (f.status, f.problem) for f in report.files}
    assert status[str(impostor)] == ("rejected", "conflict")
    assert sorted(status[p][0] for p in (str(sim.paths[1]), str(twin))) == ["duplicate", "ingested"]
    with store.open(Store.raw_key(sim.paths[0].name, 14, 2, 3)) as f:
        assert f.read() == sim.paths[0].read_bytes()  # the original is never overwritten
    assert Cube(store, "s0014-2-3").dataset().sizes["time"] == 2
