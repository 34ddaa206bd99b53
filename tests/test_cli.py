"""The ``tess-pipeline`` command as a user types it (in-process, real services)."""

import pytest
from astropy.io import fits

from pipeline.cli import main as cli


def test_simulate_command_writes_spoc_frames(tmp_path, capsys):
    out = tmp_path / "frames"
    assert cli(["simulate", str(out), "--frames", "3", "--size", "64", "--camera", "3",
                "--ccd", "2", "--sector", "20", "--cadence", "600", "--seed", "9"]) == 0
    frames = sorted(out.glob("tess*-s0020-3-2-*_ffic.fits"))
    assert len(frames) == 3 and (out / "truth.fits").exists()
    with fits.open(frames[0]) as hdul:
        assert hdul[1].data.shape == (64 + 30, 64 + 88)
        assert (hdul[0].header["CAMERA"], hdul[0].header["CCD"], hdul[0].header["SECTOR"]) == (3, 2, 20)
        assert hdul[1].header["TIMEDEL"] * 86400 == pytest.approx(600)
    assert "wrote 3 frames" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert cli([]) == 2
    assert "simulate" in capsys.readouterr().out


def test_missing_settings_file_is_a_clear_error(tmp_path, capsys):
    assert cli(["--config", str(tmp_path / "nope.toml"), "ingest", str(tmp_path)]) == 2
    assert "nope.toml: settings file not found" in capsys.readouterr().err
