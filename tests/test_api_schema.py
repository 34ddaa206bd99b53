"""Generated requests against the API's own OpenAPI schema (Schemathesis): whatever
the parameters, bodies and headers, no response is a 5xx. The API runs on real
HTTP in front of moto S3, nx-27017 and the LocalCluster, seeded directly with a few
frame, aperture and light-curve documents and a small cube (no pipeline run: the
data's correctness is test_api.py's business, this file is about robustness)."""

from __future__ import annotations

import uuid

import httpx
import numpy as np
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings

from pipeline.api import ServerThread, create_app
from pipeline.catalog import Catalog
from pipeline.config import Settings
from pipeline.lightcurves.documents import SERIES, encode_array
from pipeline.store import Cube, Store

KEY = "schema-key-" + uuid.uuid4().hex
N = 40


def _lightcurve(label: int) -> dict:
    rng = np.random.default_rng(label)
    time = 1600.0 + np.arange(N) / 48.0
    series = {"time": time, "cadenceno": np.arange(N), "flux": 1000 + rng.normal(0, 5, N),
              "flux_err": np.full(N, 5.0), "flux_bkg": np.full(N, 20.0), "centroid_row": np.full(N, 3.0),
              "centroid_col": np.full(N, 4.0), "quality": np.zeros(N), "pixel_quality": np.zeros(N),
              "n_bad_pixels": np.zeros(N)}
    series["flux"][5] = np.nan
    spectrum = {"frequency_uhz": encode_array(np.linspace(1, 100, 50), "<f4"),
                "amplitude_ppm": encode_array(rng.random(50), "<f4"),
                "psd_ppm2_uhz": encode_array(rng.random(50), "<f4"),
                "peaks": [{"frequency_uhz": 12.5, "amplitude_ppm": 40.0, "phase": 0.1, "snr": 6.0}]}
    return {"sector": 1, "camera": 1, "ccd": 1, "label": label, "cube": "s0001-1-1", "ra": 10.0 + label * 1e-3,
            "dec": -20.0, "median_flux": 1000.0, "rms_hour_ppm": 50.0, "ptp_ppm": 70.0, "n_cadences": N,
            "aperture": {"rows": encode_array([3, 3], "<i4"), "cols": encode_array([4, 5], "<i4"),
                         "n_pixels": 2, "meta": {"star_tmag": 9.5}},
            "spectrum": spectrum if label % 2 else None,
            **{name: encode_array(series[name], dtype) for name, dtype in SERIES.items()}}


@pytest.fixture(scope="module")
def synthetic_api(s3_server, mongo_server, dask_client):
    import s3fs

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        bucket = f"tess-schema-{uuid.uuid4().hex[:8]}"
        cfg = Settings(store=f"s3://{bucket}/p", s3_endpoint=s3_server, s3_key="testing",
                       s3_secret="testing", api_key=KEY)
        s3fs.S3FileSystem(**cfg.storage_options).mkdir(bucket)
        store = Store.from_settings(cfg)
        cube = Cube(store, "s0001-1-1")
        cube.create((8, 8), {"sector": 1, "camera": 1, "ccd": 1, "origin": [0, 0], "shape": [8, 8]})
        cube.extend([1600.0, 1600.02], [1, 2], [0, 0])
        cube.write(0, np.ones((2, 8, 8), np.float32), np.ones((2, 8, 8), np.float32))
        store.put_raw(b"SIMPLE  =                    T" + b" " * 2850, "raw/s0001/1-1/f.fits", "x")
        catalog = Catalog(mongo_server.url, database=f"test_schema_{uuid.uuid4().hex[:10]}")
        catalog.ensure_indexes()
        catalog.frames.insert_many([
            {"file": f"f{i}.fits", "cadenceno": i, "sector": 1, "camera": 1, "ccd": 1, "time": 1600.0 + i,
             "date_obs": "2018-08-01T00:00:00.000Z", "quality": i % 3, "raw_key": "raw/s0001/1-1/f.fits",
             "size": 2880, "status": "ingested", "cube": "s0001-1-1", "cube_index": i} for i in range(30)])
        catalog.apertures.insert_many([
            {"sector": 1, "camera": 1, "ccd": 1, "cube": "s0001-1-1", "label": i, "ra": 10.0 + i * 1e-3,
             "dec": -20.0, "centroid": {"row": 3.0, "col": 4.0}, "n_pixels": 2, "flux": 100.0 * i,
             "pixels": [[3, 4], [3, 5]], "star": None} for i in range(5)])
        catalog.lightcurves.insert_many([_lightcurve(i) for i in range(5)])
        app = create_app(cfg, dask_client, store=store, catalog=catalog)
        with ServerThread(app) as url:
            yield url
        catalog.client.drop_database(catalog.db.name)
        catalog.client.close()


# The schema comes from the app itself (its services open on first use, so building
# it touches nothing); the requests go to the live server of the fixture.
schema = schemathesis.openapi.from_dict(create_app(Settings(store="memory://tess-schema")).openapi())


@schema.parametrize()
@settings(max_examples=20, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_no_generated_request_is_a_server_error(case, synthetic_api):
    # write endpoints also without the key (the 401 path); read endpoints ignore it
    writes = case.method.upper() in ("POST", "DELETE")
    for headers in ({"X-API-Key": KEY}, {}) if writes else ({"X-API-Key": KEY},):
        response = case.call(base_url=synthetic_api, headers=headers, timeout=30)
        assert response.status_code < 500, (
            f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}\n"
            f"query={case.query} path={case.path_parameters} headers={case.headers}")
        content_type = (response.headers.get("content-type") or [""])[0]
        assert content_type.startswith(
            ("application/json", "application/fits", "application/octet-stream", "text/csv", "text/html",
             "application/gzip")), content_type


def test_the_seeded_documents_are_served(synthetic_api):
    """The generated requests above mostly miss; make sure the data they could hit works."""
    lc = httpx.get(f"{synthetic_api}/curated/lightcurves/1-1-1-1").json()
    assert lc["flux"][5] is None and len(lc["time"]) == N and lc["tmag"] == 9.5
    assert httpx.get(f"{synthetic_api}/curated/lightcurves/1-1-1-1/spectrum").json()["peaks"][0]["snr"] == 6.0
    assert httpx.get(f"{synthetic_api}/curated/lightcurves/1-1-1-2/spectrum").status_code == 404
    assert httpx.get(f"{synthetic_api}/staging/cubes/s0001-1-1/image?kind=flux&index=1").status_code == 200
    assert httpx.get(f"{synthetic_api}/staging/cubes/s0001-1-1/image?kind=corrected").status_code == 404
    items = httpx.get(f"{synthetic_api}/curated/lightcurves", params={"tmag_min": 9, "tmag_max": 10}).json()
    assert len(items["items"]) == 5
