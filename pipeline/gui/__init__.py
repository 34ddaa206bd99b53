"""The Streamlit GUI of tess-pipeline (``tess-pipeline gui``): Overview, Frames, Stars
and Jobs pages that read everything through the HTTP API (``TESS_API_URL``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.gui.client import ApiClient, ApiError, api_url

APP = Path(__file__).resolve().parent / "app.py"

__all__ = ["APP", "ApiClient", "ApiError", "api_url", "command", "run"]


def command(port: int = 8080, host: str = "127.0.0.1") -> list[str]:
    """The ``streamlit run`` command line of the GUI (headless, no usage statistics)."""
    return [sys.executable, "-m", "streamlit", "run", str(APP),
            "--server.port", str(int(port)), "--server.address", host,
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none",
            # uploads go on to POST /inject: room for a few calibrated FFIs (~35 MB each)
            "--server.maxUploadSize", "1024"]


def run(api_url: str | None = None, port: int = 8080, host: str = "127.0.0.1",
        wait: bool = True) -> int | subprocess.Popen:
    """Serve the GUI with ``streamlit run`` in a subprocess, talking to the API at
    ``api_url`` (else TESS_API_URL, else http://127.0.0.1:8000). ``wait``: block until
    it exits (Ctrl-C stops it) and return its exit code; else return the process."""
    env = dict(os.environ)
    if api_url:
        env["TESS_API_URL"] = api_url
    process = subprocess.Popen(command(port, host), env=env)
    if not wait:
        return process
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        return process.wait()
