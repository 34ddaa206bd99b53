"""``GET /curated/...``: apertures and light curves — by id ``<sector>-<camera>-<ccd>-<label>``,
by CCD, by sky position (cone search) and by brightness; a light curve as JSON, CSV
or FITS (the export module's layout, lightkurve-readable); its power spectrum."""

from __future__ import annotations

import io
import re
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Path, Query
from starlette.responses import Response

from pipeline.api import sky
from pipeline.api.deps import Camera, Ccd, Limit, PageToken, Sector, State
from pipeline.api.models import (Aperture, ApertureDetail, LightCurveData, LightCurveSummary, Page,
                                 SpectrumData, errors)
from pipeline.api.pagination import decode_token, eq, fingerprint, keyset_page
from pipeline.api.responses import JSON, array_list, clean, json_with_arrays
from pipeline.lightcurves.documents import decode_array, is_encoded

router = APIRouter(prefix="/curated", tags=["curated"])

# Labels are unique per CCD and nearly unique overall, so they lead the keyset.
SORT = [("label", 1), ("sector", 1), ("camera", 1), ("ccd", 1)]
_ID = re.compile(r"^(\d{1,4})-([1-4])-([1-4])-([A-Za-z0-9._+-]{1,100})$")
APERTURE_FIELDS = {f: 1 for f in ("sector", "camera", "ccd", "cube", "label", "centroid", "ra", "dec",
                                  "n_pixels", "flux", "star")}
SUMMARY_FIELDS = {f: 1 for f in ("sector", "camera", "ccd", "label", "ra", "dec", "median_flux",
                                 "rms_hour_ppm", "ptp_ppm", "n_cadences", "aperture")}
SERIES_OUT = ("time", "cadenceno", "flux", "flux_err", "flux_bkg", "quality", "centroid_row", "centroid_col")
# The series a JSON/CSV light curve does not need: left on the server.
SKIP_FOR_JSON = {"spectrum": 0, "pixel_quality": 0, "n_bad_pixels": 0, "tile": 0}

Ra = Annotated[float | None, Query(ge=0, le=360, allow_inf_nan=False, description="cone centre RA (deg, ICRS)")]
Dec = Annotated[float | None, Query(ge=-90, le=90, allow_inf_nan=False, description="cone centre Dec (deg)")]
Radius = Annotated[float | None, Query(gt=0, le=180, allow_inf_nan=False, description="cone radius (deg)")]
Flux = Annotated[float | None, Query(ge=-1e30, le=1e30, allow_inf_nan=False, description="e-/s")]
Tmag = Annotated[float | None, Query(ge=-30, le=50, allow_inf_nan=False, description="TESS magnitude of "
                                                                                  "the matched star")]
ItemId = Annotated[str, Path(max_length=120, description="<sector>-<camera>-<ccd>-<label>, e.g. 14-1-1-1010086")]


def item_id(doc: dict) -> str:
    return f"{doc['sector']}-{doc['camera']}-{doc['ccd']}-{doc['label']}"


def parse_id(value: str, what: str) -> tuple[int, int, int, list]:
    """(sector, camera, ccd, candidate labels) of an id; a numeric label may be stored
    as a number or a string."""
    m = _ID.match(value)
    if not m:
        raise HTTPException(422, f"path parameter 'id': {value[:60]!r} is not a {what} id "
                                 f"(<sector>-<camera>-<ccd>-<label>, e.g. 14-1-1-1010086)")
    sector, camera, ccd, label = int(m[1]), int(m[2]), int(m[3]), m[4]
    labels: list = [label]
    if re.fullmatch(r"-?\d{1,18}", label):
        labels.insert(0, int(label))
    return sector, camera, ccd, labels


def find_by_id(collection, value: str, what: str, projection=None) -> dict:
    sector, camera, ccd, labels = parse_id(value, what)
    for label in labels:          # equality per candidate: one indexed lookup each
        doc = collection.find_one({"sector": eq(sector), "camera": eq(camera), "ccd": eq(ccd),
                                   "label": eq(label)},
                                  projection)
        if doc is not None:
            return doc
    raise HTTPException(404, f"no {what} {value!r}")


def _filters(endpoint, sector, camera, ccd, ra, dec, radius, flux_min, flux_max, tmag_min, tmag_max,
             flux_field, tmag_field):
    query: dict = {k: eq(v) for k, v in (("sector", sector), ("camera", camera), ("ccd", ccd)) if v is not None}
    match = None
    cone = (ra, dec, radius)
    if any(v is not None for v in cone):
        if any(v is None for v in cone):
            raise HTTPException(422, "a cone search needs all of ra, dec and radius (degrees)")
        query.update(sky.box_query(ra, dec, radius))
        match = sky.within(ra, dec, radius)
    for field, low, high in ((flux_field, flux_min, flux_max), (tmag_field, tmag_min, tmag_max)):
        if low is not None and high is not None and low > high:
            raise HTTPException(422, f"empty range: {field} minimum {low} is above maximum {high}")
        cond = {op: v for op, v in (("$gte", low), ("$lte", high)) if v is not None}
        if cond:
            query[field] = cond
    params = {"sector": sector, "camera": camera, "ccd": ccd, "ra": ra, "dec": dec, "radius": radius,
              "flux_min": flux_min, "flux_max": flux_max, "tmag_min": tmag_min, "tmag_max": tmag_max}
    return query, match, fingerprint(endpoint, params)


def _page(collection, endpoint, projection, item, limit, page_token, flux_field, tmag_field, **filters):
    query, match, fp = _filters(endpoint, flux_field=flux_field, tmag_field=tmag_field, **filters)
    after = decode_token(page_token, fp, len(SORT)) if page_token else None
    docs, token = keyset_page(collection, query, SORT, limit, after, fp, projection, match)
    return JSON({"items": [item(d) for d in docs], "next_page_token": token})


# -- apertures ---------------------------------------------------------------------------------
def aperture_item(d: dict) -> dict:
    centroid = d.get("centroid") or {}
    return {"id": item_id(d), "sector": d["sector"], "camera": d["camera"], "ccd": d["ccd"],
            "cube": d.get("cube"), "label": d["label"], "row": centroid.get("row"), "col": centroid.get("col"),
            "ra": d.get("ra"), "dec": d.get("dec"), "n_pixels": d.get("n_pixels"), "flux": d.get("flux"),
            "star": d.get("star")}


@router.get("/apertures", response_model=Page[Aperture], responses=errors(422, 503),
            summary="Star apertures by CCD, sky position (cone) and brightness")
def list_apertures(state: State, sector: Sector = None, camera: Camera = None, ccd: Ccd = None,
                   ra: Ra = None, dec: Dec = None, radius: Radius = None, flux_min: Flux = None,
                   flux_max: Flux = None, tmag_min: Tmag = None, tmag_max: Tmag = None,
                   limit: Limit = 100, page_token: PageToken = None):
    return _page(state.catalog.apertures, "apertures", APERTURE_FIELDS, aperture_item, limit, page_token,
                 "flux", "star.tmag", sector=sector, camera=camera, ccd=ccd, ra=ra, dec=dec, radius=radius,
                 flux_min=flux_min, flux_max=flux_max, tmag_min=tmag_min, tmag_max=tmag_max)


@router.get("/apertures/{id}", response_model=ApertureDetail, responses=errors(404, 422, 503),
            summary="One aperture with its pixels")
def get_aperture(state: State, id: ItemId):
    doc = find_by_id(state.catalog.apertures, id, "aperture", {**APERTURE_FIELDS, "pixels": 1})
    return JSON({**aperture_item(doc), "pixels": doc.get("pixels") or []})


# -- light curves ------------------------------------------------------------------------------
def lightcurve_item(d: dict) -> dict:
    meta = (d.get("aperture") or {}).get("meta") or {}
    return {"id": item_id(d), "sector": d["sector"], "camera": d["camera"], "ccd": d["ccd"],
            "label": d["label"], "ra": d.get("ra"), "dec": d.get("dec"), "tmag": meta.get("star_tmag"),
            "median_flux": d.get("median_flux"), "rms_1h_ppm": d.get("rms_hour_ppm"),
            "ptp_ppm": d.get("ptp_ppm"), "n_cadences": d.get("n_cadences")}


@router.get("/lightcurves", response_model=Page[LightCurveSummary], responses=errors(422, 503),
            summary="Light-curve summaries by CCD, sky position (cone) and brightness")
def list_lightcurves(state: State, sector: Sector = None, camera: Camera = None, ccd: Ccd = None,
                     ra: Ra = None, dec: Dec = None, radius: Radius = None, flux_min: Flux = None,
                     flux_max: Flux = None, tmag_min: Tmag = None, tmag_max: Tmag = None,
                     limit: Limit = 100, page_token: PageToken = None):
    return _page(state.catalog.lightcurves, "lightcurves", SUMMARY_FIELDS, lightcurve_item, limit, page_token,
                 "median_flux", "aperture.meta.star_tmag", sector=sector, camera=camera, ccd=ccd, ra=ra,
                 dec=dec, radius=radius, flux_min=flux_min, flux_max=flux_max, tmag_min=tmag_min,
                 tmag_max=tmag_max)


def _series(doc: dict) -> dict[str, np.ndarray]:
    out = {}
    for name in SERIES_OUT:
        value = doc.get(name)
        if is_encoded(value):
            out[name] = decode_array(value)
    return out


def _csv(doc: dict) -> str:
    series = _series(doc)
    names = [n for n in SERIES_OUT if n in series]
    columns = []
    for name in names:
        values = series[name]
        if values.dtype.kind == "f":
            columns.append(["" if not np.isfinite(v) else repr(float(v)) for v in values.tolist()])
        else:
            columns.append([str(v) for v in values.tolist()])
    out = io.StringIO()
    out.write(",".join(names) + "\n")
    for row in zip(*columns):
        out.write(",".join(row) + "\n")
    return out.getvalue()


def _fits(catalog, doc: dict) -> bytes:
    from pipeline.lightcurves import LightCurve
    from pipeline.lightcurves.export import _cube_wcs, to_hdulist

    lc = LightCurve.from_document(doc)
    header, origin = _cube_wcs(catalog, doc.get("cube"), {})
    lc.meta["_origin"] = origin
    buf = io.BytesIO()
    to_hdulist(lc, header).writeto(buf, checksum=True)
    return buf.getvalue()


@router.get("/lightcurves/{id}", response_model=LightCurveData, responses={
    200: {"content": {"application/json": {}, "text/csv": {}, "application/fits": {}},
          "description": "the light curve (NaN as null in JSON, empty in CSV)"}, **errors(404, 422, 503)},
    summary="One light curve as JSON, CSV or FITS")
def get_lightcurve(state: State, id: ItemId,
                   format: Annotated[Literal["json", "csv", "fits"], Query(description="json, csv or fits")] = "json"):
    catalog = state.catalog
    if format == "fits":
        doc = find_by_id(catalog.lightcurves, id, "light curve")
        from pipeline.lightcurves.export import lightcurve_name

        name = lightcurve_name(doc["sector"], doc["camera"], doc["ccd"], doc["label"])
        return Response(_fits(catalog, doc), media_type="application/fits",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})
    doc = find_by_id(catalog.lightcurves, id, "light curve", SKIP_FOR_JSON)
    if format == "csv":
        return Response(_csv(doc), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{item_id(doc)}.csv"'})
    return Response(json_with_arrays(lightcurve_item(doc), _series(doc)), media_type="application/json")


@router.get("/lightcurves/{id}/spectrum", response_model=SpectrumData, responses=errors(404, 422, 503),
            summary="The light curve's amplitude spectrum (ppm vs µHz) and strongest peaks")
def get_spectrum(state: State, id: ItemId):
    doc = find_by_id(state.catalog.lightcurves, id, "light curve",
                     {"spectrum": 1, "sector": 1, "camera": 1, "ccd": 1, "label": 1})
    spec = doc.get("spectrum")
    if not spec:
        raise HTTPException(404, f"light curve {id!r} has no spectrum (too few good cadences)")
    body = {name: array_list(decode_array(spec[name])) if is_encoded(spec.get(name)) else []
            for name in ("frequency_uhz", "amplitude_ppm")}
    body["peaks"] = clean(spec.get("peaks") or [])
    for name in ("nyquist_uhz", "resolution_uhz", "noise_ppm"):
        body[name] = clean(spec.get(name))
    return JSON(body)
