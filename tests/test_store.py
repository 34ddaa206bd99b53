import numpy as np
import pytest

from pipeline.store import Cube, RawConflict, Store, chunking, file_checksum


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    settings = request.getfixturevalue("s3_settings")
    return Store.from_settings(settings)


def test_raw_zone_is_idempotent(store, tmp_path):
    src = tmp_path / "tess2019199201929-s0014-2-3-0150-s_ffic.fits"
    src.write_bytes(b"SIMPLE" + bytes(range(256)) * 100)
    key = Store.raw_key(src.name, 14, 2, 3)
    assert key == "raw/s0014/2-3/tess2019199201929-s0014-2-3-0150-s_ffic.fits"
    checksum = file_checksum(str(src))
    assert store.put_raw(str(src), key, checksum) == "uploaded"
    assert store.put_raw(str(src), key, checksum) == "duplicate"
    with store.open(key) as f:
        assert f.read() == src.read_bytes()
    assert not store.exists(key + ".partial")
    other = tmp_path / "other" / src.name
    other.parent.mkdir()
    other.write_bytes(b"different")
    with pytest.raises(RawConflict, match=src.name):
        store.put_raw(str(other), key, file_checksum(str(other)))


def test_chunking_rules():
    t, r, c = chunking((2048, 2048))
    assert (r, c) == (256, 256) and t * r * c * 4 >= 1 << 20
    t, r, c = chunking((10, 10))
    assert (r, c) == (10, 10) and t >= 1024


def test_cube_append_never_rewrites_complete_chunks(store):
    cube = Cube(store, "s0014-2-3")
    cube.create((40, 24), {"sector": 14, "origin": [0, 0], "shape": [40, 24]})
    depth = cube.time_chunk
    rng = np.random.default_rng(1)
    first = rng.normal(size=(depth + 3, 40, 24)).astype("f4")
    start = cube.extend(np.arange(len(first)) + 100.0, np.arange(len(first)), np.zeros(len(first)))
    cube.write(start, first, first * 0 + 1)
    chunk_key = f"{cube.key}/flux/c/0/0/0"
    with store.open(chunk_key) as f:
        before = f.read()
    mtime_before = store.fs.info(store.path(chunk_key)).get("LastModified") or \
        store.fs.info(store.path(chunk_key)).get("mtime")

    second = rng.normal(size=(5, 40, 24)).astype("f4")
    start = cube.extend(np.arange(5) + 2000.0, np.arange(5) + 1000, np.full(5, 32))
    assert start == depth + 3
    cube.write(start, second, second * 0 + 2)
    with store.open(chunk_key) as f:
        assert f.read() == before
    info = store.fs.info(store.path(chunk_key))
    assert (info.get("LastModified") or info.get("mtime")) == mtime_before

    ds = cube.dataset()
    assert ds.sizes == {"time": depth + 8, "row": 40, "col": 24}
    np.testing.assert_array_equal(ds.flux.values, np.concatenate([first, second]))
    assert list(ds.quality.values[-5:]) == [32] * 5
    assert ds.time.values[-1] == 2004.0

    with pytest.raises(ValueError, match="must come after"):
        cube.extend([1500.0], [5000], [0])


def test_dataset_coordinates_follow_origin(tmp_path):
    cube = Cube(Store(str(tmp_path)), "s0019-1-3-tesscut-x")
    cube.create((3, 4), {"origin": [100, 200], "shape": [3, 4]})
    cube.extend([1.0], [7], [0])
    cube.write(0, np.ones((1, 3, 4), "f4"), np.ones((1, 3, 4), "f4"))
    ds = cube.dataset()
    assert list(ds.row.values) == [100, 101, 102] and list(ds.col.values) == [200, 201, 202, 203]
    assert "Cube s0019-1-3-tesscut-x: 1 cadences of 3x4 px" in repr(cube)
