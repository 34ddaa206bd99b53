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


def test_stage_commands_end_to_end(tmp_path, mongo_server, dask_client, capsys):
    """ingest → background → apertures → export, each as a user types it."""
    frames = tmp_path / "frames"
    assert cli(["simulate", str(frames), "--frames", "6", "--size", "128", "--camera", "1",
                "--ccd", "1", "--sector", "21", "--seed", "4"]) == 0
    services = ["--store", str(tmp_path / "store"), "--mongo", mongo_server.url,
                "--scheduler", dask_client.scheduler.address]
    cube = ["--sector", "21", "--camera", "1", "--ccd", "1"]
    assert cli(["ingest", str(frames / "*_ffic.fits")] + services) == 1  # a glob is no file
    assert cli(["ingest"] + [str(p) for p in sorted(frames.glob("*_ffic.fits"))] + services) == 0
    assert cli(["background"] + cube + services) == 0
    assert "BackgroundReport s0021-1-1: 6 frames" in capsys.readouterr().out
    assert cli(["apertures"] + cube + services) == 0
    out = capsys.readouterr().out
    assert "s0021-1-1" in out
    assert cli(["lightcurves"] + cube + services) == 0
    capsys.readouterr()
    assert cli(["export", str(tmp_path / "lc"), "--sector", "21", "--store",
                str(tmp_path / "store"), "--mongo", mongo_server.url]) == 0
    exported = sorted((tmp_path / "lc").glob("*.fits"))
    assert exported and "wrote" in capsys.readouterr().out
    with fits.open(exported[0]) as hdul:
        assert hdul[0].header["SECTOR"] == 21 and "FLUX" in hdul[1].columns.names
    assert cli(["background", "--sector", "21"] + services) == 2
    assert "--camera" in capsys.readouterr().err
