"""The GUI (pipeline.gui) against a real, seeded backend: a tiny simulated run (16 frames
of 128×128 px: ingest, background, apertures, light curves) in a local-folder store and
a database on the nx-27017 server, served by the real API (uvicorn in a thread) with
the LocalCluster for jobs. Every page through Streamlit's AppTest, then one real
browser (Debian chromium driven by Playwright) on a `streamlit run` subprocess."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from pipeline.api import ServerThread, create_app
from pipeline.catalog import Catalog
from pipeline.config import Settings
from pipeline.gui import APP, ApiClient, command, plots
from pipeline.simulate import simulate
from pipeline.stages.apertures import run_apertures
from pipeline.stages.background import run_background
from pipeline.stages.ingest import ingest
from pipeline.stages.lightcurves import run_lightcurves
from pipeline.store import Cube, Store

API_KEY = "gui-test-key"
N_FRAMES = 16       # enough good cadences (≥ 10) for a power spectrum
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def backend(tmp_path_factory, mongo_server, dask_client):
    root = tmp_path_factory.mktemp("gui")
    sim = simulate(root / "ffi", frames=N_FRAMES, size=128, sector=14, camera=1, ccd=1, seed=42)
    store = Store(str(root / "store"))
    catalog = Catalog(mongo_server.url, database=f"gui_{uuid.uuid4().hex[:10]}")
    catalog.ensure_indexes()
    report = ingest([str(p) for p in sim.paths], store, catalog, dask_client)
    assert not report.rejected
    (cube_id,) = catalog.frames.distinct("cube", {"status": "ingested"})
    run_background(store, cube_id, dask_client)
    run_apertures(store, catalog, cube_id, dask_client)
    run_lightcurves(store, catalog, cube_id, dask_client)
    settings = Settings(store=str(root / "store"), mongo_url=mongo_server.url, api_key=API_KEY)
    app = create_app(settings, dask_client, store=store, catalog=catalog)
    with ServerThread(app) as url:
        yield SimpleNamespace(url=url, store=store, catalog=catalog, cube=cube_id, sim=sim)
    catalog.client.drop_database(catalog.db.name)
    catalog.client.close()


@pytest.fixture
def gui(backend, monkeypatch):
    """An AppTest of the whole app (st.navigation) pointed at the seeded API."""
    monkeypatch.setenv("TESS_API_URL", backend.url)
    monkeypatch.delenv("TESS_API_KEY", raising=False)

    def open_page(page: str | None = None, **query) -> AppTest:
        at = AppTest.from_file(str(APP), default_timeout=60).run()
        if page:
            at.query_params.update(query)
            at.switch_page(f"views/{page}.py").run()
        assert not at.exception, [e.value for e in at.exception]
        return at
    return open_page


def charts(at: AppTest) -> list[dict]:
    """The Plotly figures on the page, as the JSON Streamlit sends to the browser."""
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def page_protos(at: AppTest) -> str:
    """Everything the page would send to a browser, as text."""
    parts: list[str] = []

    def walk(node) -> None:
        parts.append(str(getattr(node, "proto", "")))
        for child in getattr(node, "children", {}).values():
            walk(child)
    walk(at.main)
    walk(at.sidebar)
    return "\n".join(parts)


def values(data) -> np.ndarray:
    """A figure's array: a JSON list, or Plotly's typed-array form {dtype, bdata, shape}."""
    if isinstance(data, dict):
        array = np.frombuffer(base64.b64decode(data["bdata"]), dtype=np.dtype(data["dtype"]))
        shape = [int(n) for n in str(data.get("shape", len(array))).split(",")]
        return array.reshape(shape).astype(float)
    return np.array([np.nan if v is None else v for v in np.ravel(data)], float).reshape(np.shape(data))


def trace_names(figure: dict) -> list[str]:
    return [t.get("name") for t in figure["data"]]


def lightcurve_id(doc: dict) -> str:
    return f"{doc['sector']}-{doc['camera']}-{doc['ccd']}-{doc['label']}"


def test_overview_shows_health_stats_and_jobs(gui, backend):
    at = gui()
    assert [m.label for m in at.metric] == ["store", "catalog", "scheduler"]
    assert all(m.value == "up" for m in at.metric)
    assert "pipeline status: **ok**" in at.success[0].value
    collections = next(d.value for d in at.dataframe if "collection" in d.value)
    counts = dict(zip(collections["collection"], collections["documents"]))
    assert counts["frames"] == N_FRAMES
    assert counts["apertures"] == counts["lightcurves"] == backend.catalog.apertures.count_documents({}) > 10
    frames = next(d.value for d in at.dataframe if "count" in d.value)
    assert frames.to_dict("records") == [{"sector": 14, "camera": 1, "ccd": 1, "count": N_FRAMES}]
    assert "no jobs yet" in at.info[0].value


def test_frames_page_images_stretch_and_apertures(gui, backend):
    at = gui("frames")
    n_apertures = backend.catalog.apertures.count_documents({})
    assert f"**{n_apertures} apertures shown**" in [m.value for m in at.markdown]
    figures = charts(at)
    titles = [f["layout"]["title"]["text"] for f in figures]
    assert titles == ["raw (calibrated FFI)", "background-corrected", "background model", "pixel flags"]
    assert trace_names(figures[0]) == ["image", "apertures"] == trace_names(figures[1])
    raw = values(figures[0]["data"][0]["z"])
    flux = Cube(backend.store, backend.cube).group("r")["flux"][0]
    np.testing.assert_allclose(raw, flux, rtol=1e-6)            # 128² is shown unbinned
    heat = figures[0]["data"][0]
    assert (heat["zmin"], heat["zmax"]) == pytest.approx(tuple(np.percentile(flux, [1, 99])), rel=1e-5)
    # the contour outlines exactly the aperture pixels
    outline = values(figures[0]["data"][1]["z"]) > 0.5
    assert outline.sum() == sum(len(d["pixels"]) for d in backend.catalog.apertures.find({}, {"pixels": 1}))
    # another cadence and a harder stretch
    at.slider(key="frames_index").set_value(5).run()
    at.slider(key="frames_stretch").set_value((5.0, 95.0)).run()
    frame = backend.catalog.frames.find_one({"cube": backend.cube, "cube_index": 5})
    assert f"cadence {frame['cadenceno']}" in at.caption[0].value
    heat = charts(at)[0]["data"][0]
    flux5 = Cube(backend.store, backend.cube).group("r")["flux"][5]
    assert (heat["zmin"], heat["zmax"]) == pytest.approx(tuple(np.percentile(flux5, [5, 95])), rel=1e-5)
    at.checkbox(key="frames_show_apertures").uncheck().run()
    assert trace_names(charts(at)[0]) == ["image"]


def test_stars_page_search_lightcurve_spectrum_download(gui, backend):
    at = gui("stars")
    docs = list(backend.catalog.lightcurves.find({}, {"label": 1, "sector": 1, "camera": 1, "ccd": 1,
                                                      "ra": 1, "dec": 1, "median_flux": 1}))
    assert f"{len(docs)} light curves" in at.caption[0].value
    brightest = max(docs, key=lambda d: d["median_flux"])
    star = lightcurve_id(brightest)
    assert at.selectbox(key="stars_pick").value == star           # brightest first, opened
    assert at.header[0].value == f"Star {star}"
    names = [trace_names(f) for f in charts(at)]
    assert names[0] == ["image", "apertures"]                       # aperture on the sum image
    assert names[1][0] == "flux" and names[1][1].startswith("quality-flagged") \
        and names[1][2] == "background"
    assert names[2][0] == "amplitude"
    assert [b.label for b in at.download_button] == ["FITS", "CSV"]

    # by id: the light curve's points, flagged ones apart
    at.radio(key="stars_mode").set_value("id").run()
    other = lightcurve_id(min(docs, key=lambda d: d["median_flux"]))
    at.text_input(key="stars_id").input(other).run()
    assert at.header[0].value == f"Star {other}"
    with ApiClient(backend.url) as api:
        lc = api.lightcurve(other)
        assert api.lightcurve_file(other, "fits")[:6] == b"SIMPLE"
        assert api.lightcurve_file(other, "csv").decode().splitlines()[0].count(",") >= 3
    figure = charts(at)[1]
    flagged = sum(1 for q in lc["quality"] if q)
    assert len(values(figure["data"][1]["x"])) == flagged
    assert len(values(figure["data"][0]["x"])) + flagged == len(lc["time"]) == N_FRAMES
    assert f"{flagged} of {N_FRAMES} cadences quality-flagged" in " ".join(c.value for c in at.caption)

    # by sky position: a small cone around a star finds it
    at.radio(key="stars_mode").set_value("sky position").run()
    at.number_input(key="stars_ra").set_value(brightest["ra"])
    at.number_input(key="stars_dec").set_value(brightest["dec"])
    at.number_input(key="stars_radius").set_value(0.01).run()
    found = at.dataframe[0].value["id"].tolist()
    assert star in found and len(found) < len(docs)

    # a link to a star (?id=...) opens it by id
    linked = gui("stars", id=other)
    assert linked.radio(key="stars_mode").value == "id" and linked.header[0].value == f"Star {other}"

    # an unknown id: the API's message, no traceback
    at.radio(key="stars_mode").set_value("id").run()
    at.text_input(key="stars_id").input("14-1-1-999999999").run()
    assert not at.exception
    assert "no light curve '14-1-1-999999999'" in at.error[0].value


def test_every_page_says_when_the_api_is_down(gui, monkeypatch):
    with socket.socket() as s:          # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("TESS_API_URL", dead)
    for page in (None, "frames", "stars", "jobs"):
        at = gui(page)
        assert len(at.error) == 1, (page, [e.value for e in at.error])     # one message, no cascade
        assert f"cannot reach the API at {dead}" in at.error[0].value


def test_overview_names_the_services_that_are_down(gui, tmp_path, monkeypatch):
    """A second API whose store folder is gone and whose catalog does not answer:
    /health is 503 and the page says which service is down and why."""
    missing = tmp_path / "missing"
    store = Store(str(missing))
    shutil.rmtree(missing, ignore_errors=True)
    dead_catalog = Catalog("mongodb://127.0.0.1:1", timeout_ms=300)
    app = create_app(Settings(store=str(missing), api_key=API_KEY), store=store, catalog=dead_catalog)
    with ServerThread(app) as url:
        monkeypatch.setenv("TESS_API_URL", url)
        at = gui()
    dead_catalog.close()
    assert "pipeline status: **degraded**" in at.warning[0].value
    assert {m.label: m.value for m in at.metric} == {"store": "DOWN", "catalog": "DOWN", "scheduler": "up"}
    messages = [e.value for e in at.error]
    assert any("FileNotFoundError" in m and str(missing) in m for m in messages)
    assert any("GET /stats: HTTP 503: catalog unavailable" in m for m in messages)


def test_plot_helpers():
    image = np.arange(36, dtype=float).reshape(6, 6)
    np.testing.assert_allclose(plots.bin_image(image, 4), [[10.5, 13.5], [28.5, 31.5]])
    mask = plots.aperture_mask([{"pixels": [[10, 20], [11, 20], [99, 99]]}], (4, 4), origin=(10, 18))
    assert mask.sum() == 2 and mask[0, 2] == mask[1, 2] == 1
    assert plots.stretch_limits(np.full((3, 3), np.nan)) == (0.0, 1.0)
    fig = plots.image_figure(np.ones((1200, 1000)), "big")
    assert len(fig.data[0].z) == 400 and "binned 3×3" in fig.layout.title.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_browser_draws_a_stars_light_curve(backend, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    # not the brightest: that one the page opens by itself, and we want to see ours load
    docs = sorted(backend.catalog.lightcurves.find({}, {"median_flux": 1, "label": 1, "sector": 1,
                                                        "camera": 1, "ccd": 1}),
                  key=lambda d: -d["median_flux"])
    star = lightcurve_id(docs[1])
    port = _free_port()
    env = {**os.environ, "TESS_API_URL": backend.url}
    log = open(tmp_path / "streamlit.log", "w")
    server = subprocess.Popen(command(port), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        with sync_playwright() as pw:
            # the browser starts while Streamlit does
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/_stcore/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert server.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "streamlit.log").read_text()
                time.sleep(0.2)
            page = browser.new_page(viewport={"width": 1400, "height": 1600}, accept_downloads=True)
            page.goto(f"http://127.0.0.1:{port}/stars", timeout=60_000)
            # open a star by typing its id, as a person would
            page.get_by_text("id", exact=True).click()
            box = page.get_by_label("light-curve id (sector-camera-ccd-label)")
            box.fill(star)
            box.press("Enter")
            page.get_by_text(f"Star {star}").wait_for(timeout=60_000)
            # the rerun is over (no stale elements, no "running" widget) and the plot drawn
            page.wait_for_function(
                "() => !document.querySelector('[data-stale=\"true\"], [data-testid=\"stStatusWidget\"]')"
                " && Array.from(document.querySelectorAll('.js-plotly-plot'))"
                ".some(p => (p.data || []).some(t => t.name === 'flux') && p.querySelector('.main-svg'))",
                timeout=60_000)
            # what Plotly drew: traces with their point counts (_fullData), axes with ticks
            drawn = page.evaluate(
                "() => Array.from(document.querySelectorAll('.js-plotly-plot'))"
                ".filter(p => (p.data || []).some(t => t.name === 'flux'))"
                ".map(p => ({traces: p._fullData.map(t => [t.name, t._length]),"
                "            svgs: p.querySelectorAll('.main-svg').length,"
                "            ticks: p.querySelectorAll('.xaxislayer-above text').length}))")
            assert len(drawn) == 1 and drawn[0]["svgs"] > 0 and drawn[0]["ticks"] > 0
            traces = dict(drawn[0]["traces"])
            flagged = next(n for k, n in traces.items() if k.startswith("quality-flagged"))
            assert traces["flux"] + flagged == traces["background"] == N_FRAMES
            page.screenshot(path=str(tmp_path / "stars.png"), full_page=True)
            # the FITS download button serves the API's file
            with page.expect_download(timeout=30_000) as download:
                page.get_by_role("button", name="FITS").click()
            path = tmp_path / "download.fits"
            download.value.save_as(path)
            assert path.read_bytes()[:6] == b"SIMPLE"
            browser.close()
        assert (tmp_path / "stars.png").stat().st_size > 10_000
    finally:
        server.terminate()
        server.wait(timeout=20)
        log.close()


def test_jobs_page_upload_submit_progress(gui, backend, monkeypatch):
    at = gui("jobs")
    assert "no jobs yet" in at.info[0].value
    at.multiselect(key="jobs_cubes").select(backend.cube).run()
    at.button(key="jobs_run_cubes").click().run()
    assert "needs an API key" in at.error[0].value               # checked before any request
    at.text_input(key="api_key").input("wrong").run()
    at.button(key="jobs_run_cubes").click().run()
    assert "HTTP 401" in at.error[0].value
    # uploads: an already ingested frame (duplicate) and a corrupt one (rejected): nothing to run
    at.text_input(key="api_key").input(API_KEY).run()
    first = backend.sim.paths[0]
    at.file_uploader(key="jobs_upload").set_value([
        (first.name, first.read_bytes(), "application/fits"),
        ("broken_ffic.fits", b"SIMPLE  = not fits", "application/fits")])
    at.run()
    at.button(key="jobs_inject").click().run()
    verdicts = next(d.value for d in at.dataframe if "status" in d.value)
    assert sorted(verdicts["status"]) == ["duplicate", "rejected"]
    assert "no file was accepted" in at.warning[0].value
    # a real run on the ingested cube, followed to the end
    at.button(key="jobs_run_cubes").click().run()
    job_id = at.session_state["job_id"]
    assert f"job **{job_id}**" in at.success[0].value
    with ApiClient(backend.url) as api:
        deadline = time.monotonic() + 60
        while api.job(job_id)["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, api.job(job_id)
            time.sleep(0.5)
        assert api.job(job_id)["status"] == "done", api.job(job_id)["error"]
    # the GUI's own key (TESS_API_KEY) is used but never sent to the browser
    monkeypatch.setenv("TESS_API_KEY", API_KEY)
    at = gui("jobs")
    key_box = at.text_input(key="api_key")
    assert key_box.value == "" and "configured key" in key_box.proto.placeholder
    assert "configured key" in page_protos(at) and API_KEY not in page_protos(at)
    assert at.selectbox(key="jobs_pick").value == job_id
    bars = {p.proto.text.split(":")[0]: p.value for p in at.progress}
    assert {"background", "apertures", "lightcurves"} <= set(bars) and all(v == 100 for v in bars.values())
    assert any("**done**" in s.value for s in at.success)
    with ApiClient(backend.url) as api:
        dashboard = api.health()["services"]["scheduler"].get("dashboard")
    links = [(b.proto.label, b.proto.url) for b in at.get("link_button")]
    assert links == ([("Dask dashboard", dashboard)] if dashboard else [])
    at = gui()                                                         # Overview lists it
    recent = next(d.value for d in at.dataframe if "status" in d.value and "inputs" in d.value)
    assert recent["id"].tolist() == [job_id] and recent["status"].tolist() == ["done"]
