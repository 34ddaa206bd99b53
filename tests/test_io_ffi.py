"""Readers of calibrated FFIs (pipeline.io) on small SPOC-like files written by
tests/io_fixtures.py: pixels bit for bit, gzip/bytes/URL/S3 sources, header
fallbacks, reading headers only; then every broken-file category (mostly broken
FFIs) and the public API. Cut-outs and TPFs are in test_io_tables.py."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import fsspec
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

import pipeline.io.source as source
from pipeline.io import TessFileError, read, read_info
from io_fixtures import check_stack_invariants, ffi_name, ffi_pixels, same_bits, truncate, write_ffi


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
