"""Readers of TESS pixel-table files (pipeline.io): TESScut cut-outs and SPOC target
pixel files, on the real files in shared/data/tess and on edited copies of them —
the PIXELS/TIME/FLUX table, cadence numbers, origins and WCS, and the table's own
failure modes. FFIs and the error categories are in test_io_ffi.py."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.wcs import WCS

from pipeline.io import FrameStack, StackInfo, TessFileError, read, read_info
from io_fixtures import check_stack_invariants, same_bits, truncate

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


def sky_offset_arcsec(wcs: WCS, col: float, row: float, ra: float, dec: float) -> float:
    world = wcs.pixel_to_world(col, row)
    return float(world.separation(SkyCoord(ra, dec, unit="deg")).arcsec)


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

