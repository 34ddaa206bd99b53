"""FITS readers (pipeline.io) on the real TESS files in shared/data/tess and on small
SPOC-like FFIs written by tests/io_fixtures.py."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import fsspec
import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

import pipeline.io.source as source
from pipeline.io import FrameStack, StackInfo, TessFileError, read, read_info
from io_fixtures import ffi_name, ffi_pixels, truncate, write_ffi

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tess"
RYTAU = DATA / "tess-s0019-1-3_65.489205_28.443210_10x10_astrocut.fits"
S1 = DATA / "tess-s0001-4-3_107.27_-70.0_5x5_astrocut.fits"
ASTEROID = DATA / "lightkurve_asteroid_test.fits"
PROXIMA = DATA / "lightkurve_test-tpf-tesscut_1x1.fits"
TPF = DATA / "tess25155310-s01-first-cadences.fits.gz"
REAL = [RYTAU, S1, ASTEROID, PROXIMA, TPF]

TESS_PIXEL = 21.0  # arcsec


@pytest.fixture(scope="module")
def stacks() -> dict[str, FrameStack]:
    if not DATA.is_dir():
        pytest.fail(f"real TESS test data not found at {DATA}")
    return {p.name: read(p) for p in REAL}


def table(path: Path):
    with fits.open(path) as hdul:
        return hdul[0].header.copy(), hdul[1].header.copy(), hdul[1].data.copy()


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.dtype(">f4")).astype(np.float32)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def sky_offset_arcsec(wcs: WCS, col: float, row: float, ra: float, dec: float) -> float:
    world = wcs.pixel_to_world(col, row)
    return float(world.separation(SkyCoord(ra, dec, unit="deg")).arcsec)


def check_stack_invariants(stack: FrameStack) -> None:
    info = stack.info
    n = info.n_cadences
    assert n >= 1
    assert info.time.dtype == np.float64 and info.time.shape == (n,)
    assert np.all(np.isfinite(info.time)) and np.all(np.diff(info.time) > 0)
    assert np.all(info.tstart < info.time) and np.all(info.time < info.tstop)
    np.testing.assert_allclose((info.tstart + info.tstop) / 2, info.time, rtol=0, atol=1e-9)
    assert info.cadenceno.dtype == np.int64 and np.all(np.diff(info.cadenceno) > 0)
    assert info.quality.dtype == np.int32 and info.quality.shape == (n,)
    assert stack.flux.dtype == np.float32 and stack.flux_err.dtype == np.float32
    assert stack.flux.dtype.isnative and stack.flux_err.dtype.isnative
    assert stack.flux.shape == stack.flux_err.shape == (n, *info.shape)
    assert info.kind in ("ffi", "tesscut", "tpf")


# ---------------------------------------------------------------------------- real files
def test_rytau_cutout(stacks):
    stack = stacks[RYTAU.name]
    info = stack.info
    check_stack_invariants(stack)
    assert (info.kind, info.sector, info.camera, info.ccd) == ("tesscut", 19, 1, 3)
    # every one of the 1155 rows has a finite TIME: nothing dropped
    assert info.n_cadences == 1155
    assert not any("dropped" in n for n in info.notes)
    assert info.time[0] == pytest.approx(1816.0996704101562, abs=1e-9)
    assert info.time[-1] == pytest.approx(1841.1410522460938, abs=1e-9)
    # 30-min FFIs: tstart/tstop = time -/+ 15 min
    np.testing.assert_allclose(info.tstop - info.tstart, 1800 / 86400, rtol=1e-7)
    # CADENCENO is 0 in astrocut files: cadence numbers count from FFIINDEX (28254)
    assert info.cadenceno[0] == 28254
    assert np.all(np.diff(info.cadenceno) >= 1)
    assert info.cadenceno[-1] - info.cadenceno[0] > 1154  # the mid-sector gap is counted
    assert sorted(set(info.quality.tolist())) == [0, 36, 2048, 2084]
    assert len(info.ffi_files) == 1155
    assert info.ffi_files[0] == "tess2019332135924-s0019-1-3-0164-s_ffi"
    assert all("-s0019-1-3-" in f for f in info.ffi_files)
    assert info.date_obs.startswith("2019-11-28T14:07:25")
    assert info.shape == (10, 10) and info.origin == (157, 332)

    primary, _, data = table(RYTAU)
    assert same_bits(stack.flux, data["FLUX"])
    assert same_bits(stack.flux_err, data["FLUX_ERR"])
    np.testing.assert_array_equal(info.time, data["TIME"])
    np.testing.assert_array_equal(info.quality, data["QUALITY"])
    # WCS: the cut-out centre is within 2 pixels of RA_OBJ/DEC_OBJ, the scale ~21"/px
    assert sky_offset_arcsec(info.wcs, 4.5, 4.5, primary["RA_OBJ"], primary["DEC_OBJ"]) < 2 * TESS_PIXEL
    c0 = info.wcs.pixel_to_world(0, 0)
    assert c0.separation(info.wcs.pixel_to_world(1, 0)).arcsec == pytest.approx(TESS_PIXEL, rel=0.15)
    # RY Tau is the brightest pixel, near the centre
    peak = np.unravel_index(np.nanargmax(np.nanmedian(stack.flux, axis=0)), info.shape)
    assert abs(peak[0] - 4.5) <= 1.5 and abs(peak[1] - 4.5) <= 1.5


@pytest.mark.parametrize("path, tess_point", [
    # tess-point 0.9.5 (tess_stars2px -xin: 0-based, no collateral columns) for the
    # target: an independent check that origin = (2CRVnP - 1, 1CRVnP - 45)
    (RYTAU, (162.22, 335.67)),
    (ASTEROID, (574.60, 93.07)),
    (TPF, (392.42, 1579.86)),
])
def test_origin_is_ccd_science_coordinates(stacks, path, tess_point):
    info = stacks[path.name].info
    col, row = info.wcs.world_to_pixel(SkyCoord(info.primary_header["RA_OBJ"],
                                                info.primary_header["DEC_OBJ"], unit="deg"))
    assert info.origin[0] + float(row) == pytest.approx(tess_point[0], abs=1.5)
    assert info.origin[1] + float(col) == pytest.approx(tess_point[1], abs=1.5)


def test_sector1_cutout_with_malformed_header(stacks):
    stack = stacks[S1.name]
    info = stack.info
    check_stack_invariants(stack)
    # SECTOR = '' in the header: the sector comes from the FFI_FILE names
    assert (info.kind, info.sector, info.camera, info.ccd) == ("tesscut", 1, 4, 3)
    assert any("FFI_FILE" in n and "SECTOR" in n for n in info.notes)
    assert info.n_cadences == 1282 and info.shape == (5, 5)
    assert info.time[0] == pytest.approx(1325.3230590820312, abs=1e-9)
    assert info.time[-1] == pytest.approx(1353.1560668945312, abs=1e-9)
    # no TIMEDEL: the 1800-s cadence is measured from the time stamps
    np.testing.assert_allclose(info.tstop - info.tstart, 1800 / 86400, rtol=1e-7)
    # 2CRV5P = -856 puts the stamp off the CCD; 1CTYP5 holds a number: both refused
    assert info.origin is None and any("origin None" in n for n in info.notes)
    assert info.wcs is None and any("no usable WCS" in n for n in info.notes)
    _, _, data = table(S1)
    assert same_bits(stack.flux, data["FLUX"])
    assert same_bits(stack.flux_err, data["FLUX_ERR"])
    assert info.ffi_files[0] == "tess2018206192942-s0001-4-3-0120-s_ffi"


def test_asteroid_single_cadence_cutout(stacks):
    stack = stacks[ASTEROID.name]
    info = stack.info
    check_stack_invariants(stack)
    assert (info.kind, info.sector, info.camera, info.ccd) == ("tesscut", 18, 2, 4)
    assert info.n_cadences == 1 and info.shape == (10, 11) and stack.flux.shape == (1, 10, 11)
    assert info.time[0] == pytest.approx(1793.4528198242188, abs=1e-9)
    assert info.origin == (569, 89)
    primary, _, data = table(ASTEROID)
    assert same_bits(stack.flux, data["FLUX"])
    assert sky_offset_arcsec(info.wcs, 5.0, 4.5, primary["RA_OBJ"], primary["DEC_OBJ"]) < 2 * TESS_PIXEL


def test_proxima_one_pixel_cutout(stacks):
    stack = stacks[PROXIMA.name]
    info = stack.info
    check_stack_invariants(stack)
    assert (info.kind, info.sector, info.camera, info.ccd) == ("tesscut", 12, 2, 1)
    assert info.n_cadences == 1289 and info.shape == (1, 1) and stack.flux.shape == (1289, 1, 1)
    assert info.time[0] == pytest.approx(1624.9730834960938, abs=1e-9)
    assert info.time[-1] == pytest.approx(1652.86865234375, abs=1e-9)
    assert info.origin == (1457, 334)
    _, _, data = table(PROXIMA)
    assert same_bits(stack.flux, data["FLUX"])
    # astrocut fitted a WCS to one pixel: a degenerate 2500"/px solution, refused
    assert info.wcs is None and any("pixel scale" in n for n in info.notes)


def test_spoc_tpf_gzipped(stacks):
    stack = stacks[TPF.name]
    info = stack.info
    check_stack_invariants(stack)
    assert (info.kind, info.sector, info.camera, info.ccd) == ("tpf", 1, 4, 1)
    assert info.n_cadences == 5 and info.shape == (11, 11)
    assert info.cadenceno.tolist() == [70444, 70445, 70446, 70447, 70448]
    assert info.time[0] == pytest.approx(1325.2952597688304, abs=1e-9)
    np.testing.assert_allclose(info.tstop - info.tstart, 120 / 86400, rtol=1e-7)
    assert info.ffi_files == []
    assert info.origin == (388, 1574)
    assert any("background-subtracted" in n for n in info.notes)
    primary, _, data = table(TPF)
    assert same_bits(stack.flux, data["FLUX"])
    assert same_bits(stack.flux_err, data["FLUX_ERR"])
    np.testing.assert_array_equal(info.quality, data["QUALITY"])
    assert sky_offset_arcsec(info.wcs, 5.0, 5.0, primary["RA_OBJ"], primary["DEC_OBJ"]) < 2 * TESS_PIXEL


@pytest.mark.parametrize("path", REAL, ids=lambda p: p.name[:24])
def test_read_info_matches_read(stacks, path):
    info = read_info(path)
    full = stacks[path.name].info
    assert isinstance(info, StackInfo)
    for field in ("kind", "sector", "camera", "ccd", "shape", "origin", "name", "date_obs",
                  "ffi_files"):
        assert getattr(info, field) == getattr(full, field), field
    for field in ("time", "tstart", "tstop", "cadenceno", "quality"):
        np.testing.assert_array_equal(getattr(info, field), getattr(full, field))
    assert (info.wcs is None) == (full.wcs is None)
    assert info.header_cards()["primary"]["TELESCOP"] == "TESS"
    pickle.loads(pickle.dumps(info))  # crosses Dask workers


def test_fsspec_url_of_a_real_file(stacks):
    stack = read(RYTAU.as_uri())
    assert stack.info.path == RYTAU.as_uri() and stack.info.name == RYTAU.name
    assert np.array_equal(stack.flux, stacks[RYTAU.name].flux)


# ----------------------------------------------------------------- cut-out edge cases
def _edit_table(src: Path, dst: Path, edit) -> Path:
    with fits.open(src) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    edit(hdul)
    hdul.writeto(dst, overwrite=True)
    return dst


def test_nonfinite_time_rows_are_dropped(tmp_path, caplog):
    def edit(hdul):
        hdul[1].data["TIME"][[0, 10, 500]] = np.nan
        hdul[1].data["TIME"][11] = np.inf
    path = _edit_table(RYTAU, tmp_path / "nan-times.fits", edit)
    with caplog.at_level("WARNING", logger="pipeline.io"):
        stack = read(path)
    check_stack_invariants(stack)
    assert stack.info.n_cadences == 1151
    assert any("dropped 4 of 1155 rows" in n for n in stack.info.notes)
    assert "dropped 4 of 1155 rows" in caplog.text
    _, _, data = table(RYTAU)
    keep = np.setdiff1d(np.arange(1155), [0, 10, 11, 500])
    assert same_bits(stack.flux, data["FLUX"][keep])
    np.testing.assert_array_equal(stack.info.time, data["TIME"][keep])
    assert stack.info.ffi_files[0] == data["FFI_FILE"][1].strip()
    # cadence numbers still count FFIs, so the dropped rows leave holes
    full = read_info(RYTAU)
    np.testing.assert_array_equal(stack.info.cadenceno, full.cadenceno[keep])


def test_cutout_rows_out_of_order_are_sorted(tmp_path):
    def edit(hdul):
        hdul[1].data = hdul[1].data[np.arange(len(hdul[1].data))[::-1]]
    path = _edit_table(PROXIMA, tmp_path / "reversed.fits", edit)
    reversed_stack = read(path)
    check_stack_invariants(reversed_stack)
    assert any("sorted" in n for n in reversed_stack.info.notes)
    np.testing.assert_array_equal(reversed_stack.info.time, read_info(PROXIMA).time)


def test_cutout_sector_mismatch_is_inconsistent(tmp_path):
    def edit(hdul):
        hdul[0].header["SECTOR"] = 20
    path = _edit_table(RYTAU, tmp_path / "cutout.fits", edit)
    with pytest.raises(TessFileError) as err:
        read_info(path)
    assert err.value.problem == "inconsistent" and "FFI_FILE" in str(err.value)


def test_cutout_all_nan(tmp_path):
    def edit(hdul):
        hdul[1].data["FLUX"][:] = np.nan
    path = _edit_table(ASTEROID, tmp_path / "nan.fits", edit)
    for fn in (read, read_info):
        with pytest.raises(TessFileError) as err:
            fn(path)
        assert err.value.problem == "all-NaN image"


def test_truncated_cutout_caught_by_read_info(tmp_path):
    path = truncate(RYTAU, tmp_path / RYTAU.name, RYTAU.stat().st_size - 50_000)
    for fn in (read_info, read):
        with pytest.raises(TessFileError) as err:
            fn(path)
        assert err.value.problem == "truncated" and err.value.path == str(path)


def test_truncated_gzip(tmp_path):
    path = truncate(TPF, tmp_path / TPF.name, TPF.stat().st_size // 2)
    with pytest.raises(TessFileError) as err:
        read_info(path)
    assert err.value.problem == "truncated"


def test_pixel_table_of_unknown_origin_is_unsupported(tmp_path):
    path = tmp_path / "odd.fits"
    with fits.open(ASTEROID) as hdul:
        cols = [c for c in hdul[1].columns if c.name != "FFI_FILE"]
        new = fits.HDUList([hdul[0].copy(), fits.BinTableHDU.from_columns(cols, name="PIXELS")])
        new[0].header["CREATOR"] = "somebody"
        new.writeto(path)
    with pytest.raises(TessFileError) as err:
        read_info(path)
    assert err.value.problem == "unsupported"


# --------------------------------------------------------------------------------- FFIs
@pytest.fixture
def ffi(tmp_path) -> Path:
    return write_ffi(tmp_path / ffi_name())


def test_ffi_bit_for_bit(ffi):
    stack = read(ffi)
    info = stack.info
    check_stack_invariants(stack)
    assert (info.kind, info.sector, info.camera, info.ccd) == ("ffi", 19, 1, 3)
    assert info.shape == (64, 64) and info.origin == (0, 0) and info.n_cadences == 1
    assert info.ffi_files == [ffi.name] and info.name == ffi.name
    with fits.open(ffi) as hdul:
        assert hdul[1].data.dtype == np.dtype(">f4")
        assert same_bits(stack.flux[0], hdul[1].data[:64, 44:108])
        assert same_bits(stack.flux_err[0], hdul[2].data[:64, 44:108])
        tstart, tstop = hdul[1].header["TSTART"], hdul[1].header["TSTOP"]
    assert info.time[0] == (tstart + tstop) / 2
    assert info.tstart[0] == tstart and info.tstop[0] == tstop
    assert info.cadenceno.tolist() == [28254]          # FFIINDEX
    assert info.quality.tolist() == [0]
    assert info.notes == []
    assert info.image_header["EXTNAME"] == "CAMERA.CCD 1.3 cal"
    assert info.cube_id == "s0019-1-3"


def test_ffi_from_bytes_into_given_arrays(tmp_path, ffi):
    """Ingest's path: the file's bytes already in memory, pixels written into a block."""
    plain = read(ffi)
    data = ffi.read_bytes()
    flux, err = np.full((3, 64, 64), -1, "f4"), np.full((3, 64, 64), -1, "f4")
    stack = read(str(ffi), data=data, out=(flux[1:2], err[1:2]))
    assert same_bits(flux[1], plain.flux[0]) and same_bits(err[1], plain.flux_err[0])
    assert (flux[0] == -1).all() and (flux[2] == -1).all()
    assert np.shares_memory(stack.flux, flux) and flux.dtype.isnative
    gz = write_ffi(tmp_path / (ffi.name + ".gz"), compress=True)
    assert same_bits(read(str(gz), data=gz.read_bytes()).flux, plain.flux)
    with pytest.raises(TessFileError, match="truncated"):
        read(str(ffi), data=data[: len(data) // 2])


def test_ffi_gzip_and_url(tmp_path, ffi):
    plain = read(ffi)
    gz = write_ffi(tmp_path / (ffi.name + ".gz"), compress=True)
    for path in (gz, gz.as_uri(), ffi.as_uri(), str(ffi)):
        stack = read(path)
        assert same_bits(stack.flux, plain.flux) and same_bits(stack.flux_err, plain.flux_err)
        assert stack.info.sector == 19 and stack.info.path == str(path)
        assert read_info(path).cadenceno.tolist() == [28254]


def test_ffi_from_s3(s3_settings, ffi):
    import s3fs
    fs = s3fs.S3FileSystem(**s3_settings.storage_options)
    bucket = s3_settings.store.split("://")[1].split("/")[0]
    url = f"s3://{bucket}/raw/s0019/1-3/{ffi.name}"
    fs.put(str(ffi), url)
    stack = read(url, storage_options=s3_settings.storage_options)
    assert same_bits(stack.flux, read(ffi).flux)
    assert read_info(url, storage_options=s3_settings.storage_options).name == ffi.name


def test_ffi_wcs_is_the_science_region(ffi):
    info = read_info(ffi)
    with fits.open(ffi) as hdul:
        full = WCS(hdul[1].header, fix=False)
    cols, rows = np.meshgrid([0, 10, 63], [0, 31, 63])
    ours = info.wcs.pixel_to_world(cols.ravel(), rows.ravel())
    theirs = full.pixel_to_world(cols.ravel() + 44, rows.ravel())
    assert np.max(ours.separation(theirs).arcsec) < 1e-6
    assert info.wcs.wcs.crpix[0] == pytest.approx(full.wcs.crpix[0] - 44)
    assert info.wcs.wcs.crpix[1] == pytest.approx(full.wcs.crpix[1])


def test_ffi_sector_from_name_and_fallbacks(tmp_path):
    path = write_ffi(tmp_path / ffi_name(sector=14, camera=2, ccd=3), sector=None, camera=2,
                     ffiindex=None, drop=("DQUALITY",), tstart=1700.0)
    info = read_info(path)
    assert (info.sector, info.camera, info.ccd) == (14, 2, 3)
    assert info.quality.tolist() == [0]
    assert info.cadenceno.tolist() == [round(1700.0 / (1800 / 86400))]
    assert any("SECTOR" in n for n in info.notes)
    assert any("DQUALITY" in n for n in info.notes)
    assert any("FFIINDEX" in n for n in info.notes)


def test_ffi_times_from_primary_and_timedel_fallback(tmp_path):
    path = write_ffi(tmp_path / ffi_name(), drop=("TIMEDEL", "FFIINDEX"), tstart=1800.0,
                     cadence_s=600.0)
    with fits.open(path) as hdul:
        hdul = fits.HDUList([h.copy() for h in hdul])
    for key in ("TSTART", "TSTOP"):
        del hdul[1].header[key]
    hdul.writeto(path, overwrite=True)
    info = read_info(path)
    assert info.tstart[0] == 1800.0
    assert info.cadenceno.tolist() == [round(1800.0 / (600 / 86400))]


def test_ffi_header_name_mismatch(tmp_path):
    path = write_ffi(tmp_path / ffi_name(sector=14), sector=19)
    with pytest.raises(TessFileError) as err:
        read_info(path)
    assert err.value.problem == "inconsistent" and "file name" in err.value.detail


def test_read_info_does_not_read_ffi_pixels(tmp_path, monkeypatch):
    """A full-size 2078x2136 FFI: read_info touches only its headers (a few kB of the
    35 MB), read() the whole file."""
    path = write_ffi(tmp_path / ffi_name(), size=2048)
    counted: list = []

    class Counting(io.RawIOBase):
        mode = "rb"

        def __init__(self, inner):
            self.inner, self.bytes, self.name = inner, 0, inner.name
        def readable(self): return True
        def seekable(self): return True
        def read(self, size=-1):
            data = self.inner.read(size)
            self.bytes += len(data)
            return data
        def readinto(self, buffer):
            n = self.inner.readinto(buffer)
            self.bytes += n
            return n
        def seek(self, offset, whence=0): return self.inner.seek(offset, whence)
        def tell(self): return self.inner.tell()
        def close(self):
            self.inner.close()
            super().close()

    class CountingOpenFile:
        def __init__(self, *args, **kwargs):
            self.of = fsspec.open(*args, **kwargs)
        def open(self):
            counted.append(Counting(self.of.open()))
            return counted[-1]

    monkeypatch.setattr(source, "fsspec", type("F", (), {"open": CountingOpenFile}))
    size = path.stat().st_size
    info = read_info(path)
    assert info.shape == (2048, 2048)
    assert counted[-1].bytes < 100_000 < size
    stack = read(path)
    assert stack.flux.shape == (1, 2048, 2048)
    assert counted[-1].bytes >= size - 2880


def test_read_info_skips_all_nan_pixels_read_raises(tmp_path):
    image = np.full((94, 152), np.nan, dtype=np.float32)
    path = write_ffi(tmp_path / ffi_name(), image=image, uncert=image.copy())
    assert read_info(path).shape == (64, 64)          # pixels never looked at
    with pytest.raises(TessFileError) as err:
        read(path)
    assert err.value.problem == "all-NaN image"


# ----------------------------------------------------------------------------- errors
def _broken_files(tmp_path: Path) -> dict[str, tuple[Path, str, tuple]]:
    """name → (path, expected problem, readers that must raise it)."""
    both = (read_info, read)
    good = write_ffi(tmp_path / ffi_name())
    size = good.stat().st_size
    out = {}
    out["cut in the data"] = (truncate(good, tmp_path / "cut-data.fits", size - 10_000),
                              "truncated", both)
    out["cut in a header"] = (truncate(good, tmp_path / "cut-header.fits", 2880 + 1000),
                              "truncated", both)
    gz = write_ffi(tmp_path / "whole.fits.gz", compress=True)
    out["cut gzip"] = (truncate(gz, tmp_path / "cut.fits.gz", gz.stat().st_size - 100),
                       "truncated", both)
    out["KEPLER"] = (write_ffi(tmp_path / "kepler.fits", telescop="KEPLER"), "not TESS", both)
    plain = tmp_path / "random-image.fits"
    fits.PrimaryHDU(np.zeros((10, 10), dtype=np.float32)).writeto(plain)
    out["random FITS"] = (plain, "not TESS", both)
    text = tmp_path / "notes.fits"
    text.write_text("this is not a FITS file\n" * 200)
    out["text"] = (text, "not TESS", both)
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    out["empty"] = (empty, "not TESS", both)
    image, err = ffi_pixels(64)
    out["not square"] = (write_ffi(tmp_path / "oblong.fits", image=image[:, :-10],
                                   uncert=err[:, :-10]), "wrong shape", both)
    out["uncert shape"] = (write_ffi(tmp_path / "uncert.fits", image=image, uncert=err[:-1]),
                           "wrong shape", both)
    tiny = np.zeros((20, 80), dtype=np.float32)
    out["too small"] = (write_ffi(tmp_path / "tiny.fits", image=tiny, uncert=tiny),
                        "wrong shape", both)
    out["no TSTART"] = (write_ffi(tmp_path / "no-tstart.fits", drop=("TSTART",)),
                        "missing keyword", both)
    out["no CAMERA"] = (write_ffi(tmp_path / "no-camera.fits", drop=("CAMERA",)),
                        "missing keyword", both)
    nan = np.full_like(image, np.nan)
    out["all NaN"] = (write_ffi(tmp_path / "nan.fits", image=nan, uncert=err),
                      "all-NaN image", (read,))
    raw = tmp_path / "raw.fits"
    with fits.open(good) as hdul:
        fits.HDUList([hdul[0].copy(), hdul[1].copy()]).writeto(raw)
    out["raw FFI"] = (raw, "unsupported", both)
    lc = tmp_path / "lc.fits"
    fits.HDUList([fits.PrimaryHDU(header=fits.Header([("TELESCOP", "TESS")])),
                  fits.BinTableHDU.from_columns([fits.Column("TIME", "D", array=[1.0]),
                                                 fits.Column("SAP_FLUX", "E", array=[1.0])],
                                                name="LIGHTCURVE")]).writeto(lc)
    out["light curve"] = (lc, "unsupported", both)
    out["missing"] = (tmp_path / "nowhere.fits", "unreadable", both)
    return out


def test_every_broken_file_gives_its_category(tmp_path):
    for label, (path, problem, readers) in _broken_files(tmp_path).items():
        for fn in readers:
            with pytest.raises(TessFileError) as err:
                fn(path)
            exc = err.value
            assert exc.problem == problem, f"{label} via {fn.__name__}: {exc}"
            assert exc.path == str(path)
            assert str(exc).startswith(f"{path}: {problem}"), str(exc)
            assert exc.detail, label
            again = pickle.loads(pickle.dumps(exc))
            assert (again.path, again.problem, again.detail) == (exc.path, exc.problem, exc.detail)


def test_truncated_data_padded_by_astropy_is_still_truncated(tmp_path):
    """astropy only warns about a short file and pads it; the reader refuses it."""
    good = write_ffi(tmp_path / ffi_name())
    path = truncate(good, tmp_path / "short.fits", good.stat().st_size - 2880 * 3)
    with pytest.raises(TessFileError) as err:
        read_info(path)
    assert err.value.problem == "truncated" and "bytes missing" in err.value.detail


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_missing_final_padding_is_not_truncation(tmp_path):
    """Some writers omit the zero padding after the last HDU: all data is there."""
    good = write_ffi(tmp_path / ffi_name())
    padding = 2880 - (94 * 152 * 4) % 2880
    path = truncate(good, tmp_path / ffi_name(stamp="2019332142924"),
                    good.stat().st_size - padding)
    assert same_bits(read(path).flux_err, read(good).flux_err)


def test_unexpected_errors_become_unreadable(tmp_path, monkeypatch):
    import pipeline.io.ffi as ffi_module
    path = write_ffi(tmp_path / ffi_name())

    def boom(*args, **kwargs):
        raise RuntimeError("something astropy never promised")
    monkeypatch.setattr(ffi_module, "_pixels", boom)
    with pytest.raises(TessFileError) as err:
        read(path)
    assert err.value.problem == "unreadable"
    assert "RuntimeError: something astropy never promised" in str(err.value)


def test_public_api():
    import pipeline.io as pio
    for name in ("read", "read_info", "StackInfo", "FrameStack", "TessFileError"):
        assert hasattr(pio, name)
    assert issubclass(TessFileError, ValueError)
