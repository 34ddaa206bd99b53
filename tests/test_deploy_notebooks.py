"""The notebooks in notebooks/ executed top to bottom with nbclient, as a user runs them
on a laptop: embedded defaults (local store folder, local catalog server, a local Dask
cluster), a small simulated sector. 01 submits the run, 02 reads its results."""

from __future__ import annotations

import os
import time

import nbformat
import pytest

from test_deploy_support import REPO

NOTEBOOKS = REPO / "notebooks"


def execute(name: str, workdir, parameters: str = "", timeout: int = 240):
    """Run a notebook in ``workdir``; ``parameters`` go in a cell right after the one
    tagged "parameters", as papermill injects them."""
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    if parameters:
        at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        nb.cells.insert(at + 1, nbformat.v4.new_code_cell(parameters))
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    started = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - started


def outputs(nb, kind: str) -> list:
    return [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
            if o.get("output_type") == kind]


def text_of(nb) -> str:
    parts = []
    for cell in nb.cells:
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            parts.append(o.get("text", "") or o.get("data", {}).get("text/plain", ""))
            parts.append(o.get("data", {}).get("text/html", ""))
    return "\n".join(p if isinstance(p, str) else "".join(p) for p in parts)


def test_notebooks_are_valid_and_parametrised():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["01-submit-job.ipynb", "02-explore-results.ipynb"]
    for name in names:
        nb = nbformat.read(NOTEBOOKS / name, as_version=4)
        nbformat.validate(nb)
        assert not outputs(nb, "error") and not any(
            c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{name}: saved outputs"
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{name}: one cell tagged 'parameters' (papermill)"


@pytest.mark.slow
def test_notebooks_run_top_to_bottom_on_the_embedded_defaults(tmp_path, monkeypatch):
    for var in [v for v in os.environ if v.startswith("TESS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")

    # one worker: a second one only costs start-up time on a small test machine
    submitted, seconds_01 = execute("01-submit-job.ipynb", tmp_path, "N_WORKERS = 1")
    assert not outputs(submitted, "error")
    text = text_of(submitted)
    assert "Dask dashboard" in text and "/status" in text
    assert "job" in text and " done" in text, text[-2000:]
    assert (tmp_path / "tess-notebook").is_dir() and (tmp_path / "tess-data").is_dir()

    explored, seconds_02 = execute("02-explore-results.ipynb", tmp_path)
    assert not outputs(explored, "error")
    images = [o for o in outputs(explored, "display_data") if "image/png" in o.get("data", {})]
    assert len(images) >= 5, "light curve, aperture, spectrum, noise and comparison plots"
    print(f"notebook 01: {seconds_01:.1f} s, notebook 02: {seconds_02:.1f} s")
    assert seconds_01 < 120 and seconds_02 < 60
