"""Fuzzing the FITS readers' content handling (Hypothesis), where the right answer is
known: pixels stored as every BITPIX (scaled or not), images and table cells of any
shape, NaN/inf floods in pixels and times, time/cadence keywords at numeric extremes.

Each file is rewritten consistently by astropy from a seed (``test_fuzz_readers``), so
a read must succeed with exactly the values astropy sees — or fail with the one
``TessFileError`` problem that applies ("wrong shape", "all-NaN image", ...). The
harness (``check``: every reader, a ``time_limit`` per call, TessFileError or a valid
stack) is shared with ``test_fuzz_readers.py``.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import given, strategies as st

from pipeline.io import FrameStack, TessFileError
from test_fuzz_readers import (REAL, SEEDS, SIMULATED, cards_of, card, check,
                               fuzz_settings, same_pixels, seed_bytes)

pytestmark = pytest.mark.filterwarnings("ignore")  # astropy warns about odd files
TABLE_SEEDS = REAL  # every real seed is a cut-out or a TPF
NUMERIC_KEYS = ("TSTART", "TSTOP", "TIMEDEL", "FFIINDEX", "DQUALITY", "SECTOR", "CAMERA",
                "CCD", "1CRV4P", "2CRV4P", "1CRV5P", "2CRV5P")
EXTREMES = st.one_of(
    st.sampled_from(["0", "-0.0", "1E-300", "-1E-300", "5E-324", "1E300", "-1E300", "1E308",
                     "1.7976931348623157E308", "9223372036854775807", "-9223372036854775808",
                     "9223372036854775808", "18446744073709551616", "2147483647", "1E20",
                     "0.000694444", "0.0208333", "2.3E-4", "-1800", "T"]),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(2 ** 66), 2 ** 66).map(str))
SCIENCE = (slice(0, -30), slice(44, -44))


def hdulist(name: str) -> fits.HDUList:
    return fits.open(io.BytesIO(seed_bytes(name)), memmap=False, lazy_load_hdus=False)


def to_bytes(hdul: fits.HDUList) -> bytes:
    out = io.BytesIO()
    hdul.writeto(out, output_verify="silentfix")
    return out.getvalue()


def astropy_view(blob: bytes, index: int, column: str | None = None) -> np.ndarray:
    """What astropy reads (scaling applied) from HDU ``index`` (a column of a table)."""
    with fits.open(io.BytesIO(blob), memmap=False) as hdul:
        data = hdul[index].data
        return np.array(data if column is None else data[column])


def rng_from(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# -- keywords at numeric extremes -----------------------------------------------------------
@fuzz_settings(80)
@given(name=st.sampled_from(SEEDS), data=st.data())
def test_time_and_id_keywords_at_extremes(name, data):
    """TSTART/TSTOP/TIMEDEL/FFIINDEX/SECTOR/... tiny, huge, negative, past int64: a
    valid stack (cadence numbers that fit, increasing) or a clear error."""
    blob = bytearray(seed_bytes(name))
    present = [(o, k) for o, k in cards_of(name)[0] if k in NUMERIC_KEYS]
    for _ in range(data.draw(st.integers(1, 3), label="cards")):
        offset, key = data.draw(st.sampled_from(present), label="card")
        blob[offset:offset + 80] = card(key, data.draw(EXTREMES, label=key))
    check(name, bytes(blob))


# -- FFI pixels: BITPIX, scaling, shapes, floods --------------------------------------------
BITPIX = {8: np.uint8, 16: np.int16, 32: np.int32, 64: np.int64, -32: np.float32, -64: np.float64}


@fuzz_settings(12)   # every (BITPIX, scaled) pair
@given(bitpix=st.sampled_from(sorted(BITPIX)), scaled=st.booleans())
def test_ffi_pixels_of_every_bitpix(bitpix, scaled):
    """An FFI image stored as any BITPIX, integer ones optionally with BSCALE/BZERO:
    the flux is astropy's (scaled) value as float32, pixel for pixel."""
    hdul = hdulist(SIMULATED)
    for index in (1, 2):
        image = hdul[index].data.astype(np.float64)
        if bitpix > 0:
            info = np.iinfo(BITPIX[bitpix])
            values = np.clip(np.round(image * (4 if scaled else 1)), max(info.min, -2 ** 30),
                             min(info.max, 2 ** 30))
            hdul[index].data = values.astype(BITPIX[bitpix])
            if scaled:
                hdul[index].header["BSCALE"], hdul[index].header["BZERO"] = 0.25, 1.5
        else:
            hdul[index].data = image.astype(BITPIX[bitpix])
    blob = to_bytes(hdul)
    stack = check(SIMULATED, blob)
    assert isinstance(stack, FrameStack), str(stack)
    for array, index in ((stack.flux, 1), (stack.flux_err, 2)):
        expected = astropy_view(blob, index)[SCIENCE].astype(np.float32)
        assert same_pixels(array[0], expected)


SHAPES = st.one_of(
    st.tuples(st.integers(0, 70), st.integers(0, 130)),
    st.integers(1, 40).map(lambda s: (s + 30, s + 88)),           # a valid FFI layout
    st.lists(st.integers(0, 40), min_size=1, max_size=3).map(tuple))


@fuzz_settings(60)
@given(shape=SHAPES, err_shape=st.one_of(st.none(), SHAPES), seed=st.integers(0, 2 ** 16))
def test_ffi_images_of_any_shape(shape, err_shape, seed):
    """Image and uncertainty of any shape: read when both are the same 2-D FFI layout
    (rows - 30 == cols - 88 > 0), else "wrong shape"."""
    err_shape = shape if err_shape is None else err_shape
    rng = rng_from(seed)
    hdul = hdulist(SIMULATED)
    hdul[1].data = rng.normal(100, 5, shape).astype(np.float32)
    hdul[2].data = rng.normal(10, 1, err_shape).astype(np.float32)
    blob = to_bytes(hdul)
    result = check(SIMULATED, blob)
    valid = (len(shape) == 2 and tuple(err_shape) == tuple(shape)
             and shape[0] - 30 == shape[1] - 88 > 0)
    if not valid:
        assert isinstance(result, TessFileError) and result.problem == "wrong shape", result
        return
    assert isinstance(result, FrameStack), str(result)
    assert result.info.shape == (shape[0] - 30, shape[1] - 88)
    assert same_pixels(result.flux[0], astropy_view(blob, 1)[SCIENCE])


NONFINITE = st.sampled_from([np.nan, np.inf, -np.inf])


@fuzz_settings(40)
@given(fraction=st.sampled_from([0.0, 0.1, 0.5, 0.99, 1.0]), value=NONFINITE,
       mixed=st.booleans(), where=st.sampled_from(["science", "everywhere", "collateral"]),
       seed=st.integers(0, 2 ** 16))
def test_ffi_nan_inf_floods(fraction, value, mixed, where, seed):
    """NaN/inf over part or all of an FFI: read bit for bit while one science pixel is
    finite, else "all-NaN image" from read (read_info does not look at pixels)."""
    rng = rng_from(seed)
    hdul = hdulist(SIMULATED)
    image = hdul[1].data.astype(np.float32)
    region = np.zeros(image.shape, bool)
    if where in ("science", "everywhere"):
        region[SCIENCE] = True
    if where in ("collateral", "everywhere"):
        region[~np.pad(np.ones((image.shape[0] - 30, image.shape[1] - 88), bool),
                       ((0, 30), (44, 44)))] = True
    flood = region & (rng.random(image.shape) < fraction)
    image[flood] = rng.choice([np.nan, np.inf, -np.inf], flood.sum()) if mixed else value
    hdul[1].data = image
    hdul[2].data = np.where(flood, np.float32(value), hdul[2].data).astype(np.float32)
    blob = to_bytes(hdul)
    result = check(SIMULATED, blob)
    if not np.isfinite(image[SCIENCE]).any():
        assert isinstance(result, TessFileError) and result.problem == "all-NaN image", result
        return
    assert isinstance(result, FrameStack), str(result)
    assert np.array_equal(result.flux[0].view(np.uint32), image[SCIENCE].view(np.uint32))


# -- tables: TIME and FLUX floods, column types and cell shapes ------------------------------
def outside_science(origin, shape) -> np.ndarray:
    if origin is None:
        return np.zeros(shape, bool)
    rows, cols = origin[0] + np.arange(shape[0]), origin[1] + np.arange(shape[1])
    inside = ((rows >= 0) & (rows < 2048))[:, None] & ((cols >= 0) & (cols < 2048))[None, :]
    return ~inside


@fuzz_settings(40)
@given(name=st.sampled_from(TABLE_SEEDS), time_hits=st.sampled_from([0, 0.01, 0.5, 1.0]),
       time_value=NONFINITE, flux_hits=st.sampled_from([0, 0.3, 1.0]), flux_value=NONFINITE,
       whole_frames=st.booleans(), swap=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_table_nan_inf_floods(name, time_hits, time_value, flux_hits, flux_value,
                              whole_frames, swap, seed):
    """Cut-outs and TPFs with non-finite TIMEs (rows dropped), rows out of order (sorted)
    and NaN/inf pixels: the kept rows' pixels exactly, or the applicable error."""
    rng = rng_from(seed)
    hdul = hdulist(name)
    rows = hdul[1].data
    n = len(rows)
    if swap and n > 1:
        i, j = rng.choice(n, 2, replace=False)
        copy = rows.copy()
        rows[i], rows[j] = copy[j], copy[i]
    rows["TIME"][rng.random(n) < time_hits] = time_value
    flux = rows["FLUX"]
    hit = (rng.random(n) < flux_hits)[:, None, None] if whole_frames else \
        rng.random(flux.shape) < flux_hits
    flux[np.broadcast_to(hit, flux.shape)] = flux_value
    blob = to_bytes(hdul)
    result = check(name, blob)

    time = astropy_view(blob, 1, "TIME")
    kept = np.flatnonzero(np.isfinite(time))
    kept = kept[np.argsort(time[kept], kind="stable")]
    flux = astropy_view(blob, 1, "FLUX").astype(np.float32)[kept]
    if len(kept) == 0:
        assert isinstance(result, TessFileError) and result.problem == "unreadable", result
        return
    if not np.isfinite(flux).any():
        assert isinstance(result, TessFileError) and result.problem == "all-NaN image", result
        return
    assert isinstance(result, FrameStack), str(result)
    np.testing.assert_array_equal(result.info.time, time[kept])
    outside = outside_science(result.info.origin, result.info.shape)
    flux[:, outside] = np.nan
    assert same_pixels(result.flux, flux)


TABLE_FORMATS = {"E": np.float32, "D": np.float64, "J": np.int32, "I": np.int16, "B": np.uint8,
                 "K": np.int64}


@fuzz_settings(30)
@given(name=st.sampled_from(TABLE_SEEDS), fmt=st.sampled_from(sorted(TABLE_FORMATS)),
       cell=st.one_of(st.none(), st.lists(st.integers(1, 12), min_size=1,
                                                               max_size=3).map(tuple)),
       err_cell=st.one_of(st.none(), st.lists(st.integers(1, 12), min_size=1, max_size=3)
                          .map(tuple)), seed=st.integers(0, 2 ** 16))
def test_table_pixel_columns_of_any_type_and_shape(name, fmt, cell, err_cell, seed):
    """FLUX/FLUX_ERR stored as any numeric TFORM with any cell
    shape: read as astropy's values when both are the same 2-D image, else "wrong shape"."""
    rng = rng_from(seed)
    hdul = hdulist(name)
    table = hdul[1]
    n = len(table.data)
    columns = []
    shapes = {"FLUX": cell or table.data["FLUX"].shape[1:],
              "FLUX_ERR": err_cell or cell or table.data["FLUX_ERR"].shape[1:]}
    for col in table.columns:
        if col.name not in shapes:
            columns.append(col)
            continue
        shape = tuple(shapes[col.name])
        stored = np.round(rng.normal(50, 10, (n, *shape))).clip(0, 200)
        size = int(np.prod(shape))
        dim = "(" + ",".join(str(d) for d in shape[::-1]) + ")" if len(shape) > 1 else None
        values = stored.astype(TABLE_FORMATS[fmt])
        columns.append(fits.Column(name=col.name, format=f"{size}{fmt}", dim=dim,
                                   array=values if dim else values.reshape(n, size)))
    hdul[1] = fits.BinTableHDU.from_columns(columns, header=table.header, name="PIXELS")
    blob = to_bytes(hdul)
    result = check(name, blob)
    flux_shape, err_shape = tuple(shapes["FLUX"]), tuple(shapes["FLUX_ERR"])
    if len(flux_shape) != 2 or err_shape != flux_shape:
        assert isinstance(result, TessFileError) and result.problem == "wrong shape", result
        return
    assert isinstance(result, FrameStack), str(result)
    time = astropy_view(blob, 1, "TIME")
    kept = np.flatnonzero(np.isfinite(time))
    kept = kept[np.argsort(time[kept], kind="stable")]
    for array, column in ((result.flux, "FLUX"), (result.flux_err, "FLUX_ERR")):
        expected = astropy_view(blob, 1, column).astype(np.float32)[kept]
        expected[:, outside_science(result.info.origin, result.info.shape)] = np.nan
        assert same_pixels(array, expected), column


# -- the holes the fuzzing found, pinned ----------------------------------------------------
def _with_cards(name: str, changes: dict) -> bytes:
    blob = bytearray(seed_bytes(name))
    for offset, key in cards_of(name)[0]:
        if key in changes:
            blob[offset:offset + 80] = card(key, changes[key])
    return bytes(blob)


def test_found_unparsable_card_still_gives_header_documents():
    """A card astropy cannot parse made ``header_cards`` (ingest's frame documents)
    raise; its raw text is kept instead."""
    name = "lightkurve_asteroid_test.fits"
    stack = check(name, _with_cards(name, {"2CRVL5": "'Z\xe5|\xbdv\xea"}))
    assert isinstance(stack, FrameStack)
    assert stack.info.header_cards()["image"]["2CRVL5"].startswith("'Z")


@pytest.mark.parametrize("name, changes, problem", [
    ("lightkurve_asteroid_test.fits", {"FFIINDEX": "4.768414967409189E+16"}, "inconsistent"),
    (SIMULATED, {"FFIINDEX": "-5"}, "inconsistent"),
    (SIMULATED, {"TSTART": "1.7E308", "TSTOP": "1.79E308"}, "inconsistent"),  # mid = inf
    # an exposure that ends before (or as) it starts: the seed's TSTART is 1681.5; random
    # values reach this only now and then, so it is pinned
    (SIMULATED, {"TSTOP": "1000.0"}, "inconsistent"),
    (SIMULATED, {"TSTOP": "1681.5"}, "inconsistent"),
    ("tess25155310-s01-first-cadences.fits.gz", {"TIMEDEL": "2.2250738585E-313",
                                                 "TSTOP": "2.3E-4"}, None),
])
def test_found_broken_time_keywords(name, changes, problem):
    """Cadence numbers past int64/2^31 from FFIINDEX or TSTART/TIMEDEL, an overflowing
    mid-exposure time, an FFI whose TSTOP is not after its TSTART, a denormal TIMEDEL
    (tstart == tstop): a clear error, or (for the TIMEDEL) a cadence measured from the
    time stamps."""
    result = check(name, _with_cards(name, changes))
    if problem is None:
        assert isinstance(result, FrameStack), str(result)
        assert any("TIMEDEL" in n for n in result.info.notes)
    else:
        assert isinstance(result, TessFileError) and result.problem == problem, result


@pytest.mark.parametrize("name", [n for n in TABLE_SEEDS if n != "lightkurve_asteroid_test.fits"])
def test_two_rows_with_the_same_time_are_inconsistent(name):
    """Two table rows at the same TIME (a row written twice): "inconsistent", not two
    cadences with the same time stamp (consumers need strictly increasing times). The
    random floods never duplicate a finite TIME, so this is pinned for every seed with
    more than one row (the asteroid cut-out has one)."""
    hdul = hdulist(name)
    hdul[1].data["TIME"][1] = hdul[1].data["TIME"][0]
    result = check(name, to_bytes(hdul))
    assert isinstance(result, TessFileError) and result.problem == "inconsistent", result
    assert "two rows have TIME" in result.detail, result


def test_found_half_the_times_missing_without_timedel():
    """The 2018 cut-out has no TIMEDEL: with every other TIME NaN the median spacing
    was two cadences and the derived cadence numbers collided."""
    name = "tess-s0001-4-3_107.27_-70.0_5x5_astrocut.fits"
    hdul = hdulist(name)
    hdul[1].data["TIME"][::2] = np.nan
    stack = check(name, to_bytes(hdul))
    assert isinstance(stack, FrameStack), str(stack)
    assert any("cadence 1800 s" in n for n in stack.info.notes)


def test_found_corrupt_extension_header_is_not_a_raw_ffi():
    """Junk over an extension's first header block made astropy drop the rest of the
    file, so a corrupt calibrated FFI read as an "unsupported" raw FFI."""
    blob = bytearray(seed_bytes(SIMULATED))
    blob[2 * 2880:2 * 2880 + 400] = np.random.default_rng(0).integers(0, 256, 400, np.uint8).tobytes()
    result = check(SIMULATED, bytes(blob))
    assert isinstance(result, TessFileError) and result.problem == "unreadable", result
    assert "XTENSION" in result.detail
