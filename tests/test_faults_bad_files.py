"""Bad files among good ones (issue #8): a corrupt, a truncated and a non-TESS FITS —
plus an FFI whose pixels are all NaN, which only the pixel task can find — among 100
good simulated frames, ingested together on a real LocalCluster, nx-27017 catalog and
a local store.

Each bad file is reported with its problem and recorded in the catalog
(``catalog.rejections()``: file, problem, error, path — the quarantine list; the file
itself stays where it was); those refused by the header scan never reach the raw zone.
The 100 good frames are all in the cube, bit for bit, with one frame document each.
Ingesting the same folder again duplicates nothing: the good files are duplicates and
each bad file keeps one rejection record. A file refused only by the pixel task (the
all-NaN one) never reaches the raw zone either: its pixels are read before the copy.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from astropy.io import fits

from pipeline.io import read
from pipeline.simulate import simulate
from pipeline.stages.ingest import UNUSABLE_BIT, ingest
from pipeline.store import Cube, Store

GOOD = 100
SECTOR, CAMERA, CCD = 20, 1, 2
CUBE = f"s{SECTOR:04d}-{CAMERA}-{CCD}"


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """104 simulated 8x8 frames: the first 100 stay good, the last 4 are spoilt."""
    sim = simulate(tmp_path_factory.mktemp("sim"), frames=GOOD + 4, size=8, camera=CAMERA,
                   ccd=CCD, sector=SECTOR, seed=5)
    return sim.paths


@pytest.fixture
def folder(tmp_path, frames):
    """The 100 good frames and the four bad files in one folder; returns (folder, good
    paths, {kind: bad path})."""
    folder = tmp_path / "incoming"
    folder.mkdir()
    good = [shutil.copy(p, folder / p.name) for p in frames[:GOOD]]
    spoilt = [folder / p.name for p in frames[GOOD:]]
    corrupt, truncated, not_tess, all_nan = spoilt
    rng = np.random.default_rng(8)

    blob = bytearray(frames[GOOD].read_bytes())
    hdu1 = 2 * 2880      # the image HDU's header: junk over its XTENSION/BITPIX/NAXIS cards
    blob[hdu1:hdu1 + 800] = rng.integers(0, 256, 800, dtype=np.uint8).tobytes()
    corrupt.write_bytes(bytes(blob))

    blob = frames[GOOD + 1].read_bytes()
    truncated.write_bytes(blob[:len(blob) // 2])   # a download cut half-way

    with fits.open(frames[GOOD + 2]) as hdul:      # the same layout from another telescope
        hdul[0].header["TELESCOP"] = "Kepler"
        hdul.writeto(not_tess)

    with fits.open(frames[GOOD + 3]) as hdul:      # passes the header scan, fails on pixels
        hdul[1].data = np.full_like(hdul[1].data, np.nan)
        hdul.writeto(all_nan)
    bad = {"corrupt": corrupt, "truncated": truncated, "not TESS": not_tess, "all NaN": all_nan}
    return folder, good, bad


EXPECTED_PROBLEM = {"corrupt": "unreadable", "truncated": "truncated", "not TESS": "not TESS",
                    "all NaN": "all-NaN image"}


@pytest.mark.slow   # 104 files simulated and ingested twice (~30 s on 2 idle cores)
def test_bad_files_are_reported_quarantined_and_the_rest_ingested(folder, tmp_path, catalog,
                                                                   dask_client):
    incoming, good, bad = folder
    store = Store(str(tmp_path / "store"))
    report = ingest([str(incoming)], store, catalog, dask_client)

    # reported: every bad file rejected with its problem and an error naming it
    assert report.count("ingested") == GOOD, report
    rejected = {f.name: f for f in report.rejected}
    assert set(rejected) == {p.name for p in bad.values()}
    for kind, path in bad.items():
        entry = rejected[path.name]
        assert entry.problem == EXPECTED_PROBLEM[kind], (kind, entry.error)
        assert str(path) in entry.error, entry.error

    # recorded: one rejection record per bad file, with the reason and where it was
    records = {r["file"]: r for r in catalog.rejections()}
    assert set(records) == set(rejected)
    for kind, path in bad.items():
        record = records[path.name]
        assert record["problem"] == EXPECTED_PROBLEM[kind] and record["stage"] == "ingest"
        assert record["path"] == str(path) and str(path) in record["error"]

    # the 100 good frames: in the cube bit for bit, one document each, originals in raw/
    cube = Cube(store, CUBE)
    ds = cube.dataset()
    docs = {d["file"]: d for d in catalog.frames.find({"status": "ingested"})}
    assert len(docs) == GOOD and catalog.frames.count_documents({}) == GOOD + len(bad)
    flux = ds.flux.values
    for path in map(str, good):
        name = path.rsplit("/", 1)[-1]
        index = docs[name]["cube_index"]
        assert flux[index].tobytes() == read(path).flux[0].tobytes(), name
        assert store.exists(Store.raw_key(name, SECTOR, CAMERA, CCD))
    # the all-NaN frame had its slot before its pixels were read: flagged, never used
    nan_slots = sorted(set(range(ds.sizes["time"])) - {d["cube_index"] for d in docs.values()})
    assert len(nan_slots) == 1 and int(ds.quality.values[nan_slots[0]]) & UNUSABLE_BIT
    # quarantined: files refused by the header scan never reach the raw zone
    for kind in ("corrupt", "truncated", "not TESS"):
        assert not store.exists(Store.raw_key(bad[kind].name, SECTOR, CAMERA, CCD)), kind
    assert not [k for k in store.fs.find(store.path("raw")) if k.endswith(".partial")]

    # again: nothing duplicated, nothing lost
    again = ingest([str(incoming)], store, catalog, dask_client)
    assert again.count("duplicate") == GOOD and len(again.rejected) == len(bad), again
    assert catalog.frames.count_documents({"status": "ingested"}) == GOOD
    assert len(catalog.rejections()) == len(bad)
    assert Cube(store, CUBE).dataset().sizes["time"] == ds.sizes["time"]


def test_file_rejected_by_the_pixel_task_leaves_no_raw_copy(folder, tmp_path, catalog,
                                                            dask_client):
    incoming, good, bad = folder
    store = Store(str(tmp_path / "store"))
    report = ingest([str(good[0]), str(bad["all NaN"])], store, catalog, dask_client)
    assert [f.problem for f in report.rejected] == ["all-NaN image"]
    assert not store.exists(Store.raw_key(bad["all NaN"].name, SECTOR, CAMERA, CCD))
