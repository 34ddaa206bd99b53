"""Stars: find a star (by id, sky position or brightness), then its aperture on the sum
image, its light curve, its power spectrum, and the light curve as FITS or CSV."""

import numpy as np
import pandas as pd
import streamlit as st

from pipeline.gui import common, plots

MAX_RESULTS = 500
META_FIELDS = ("sector", "camera", "ccd", "label", "ra", "dec", "tmag", "median_flux",
               "rms_1h_ppm", "ptp_ppm", "n_cadences")


def _star_name(star) -> str:
    """The catalog star an aperture was matched to (a document or a bare id)."""
    if isinstance(star, dict):
        name = star.get("id", star.get("tic", ""))
        return f"{name} (Tmag {star['tmag']:.2f})" if star.get("tmag") is not None else str(name)
    return str(star)


st.title("Stars")
url = common.current_url()
api = common.client()

# first visit: a link like ?id=14-1-1-21 opens that star by id; else list by brightness
if "stars_mode" not in st.session_state:
    linked = st.query_params.get("id")
    st.session_state["stars_mode"] = "id" if linked else "brightness"
    if linked:
        st.session_state["stars_id"] = linked

mode = st.radio("search by", ["id", "sky position", "brightness"], horizontal=True,
                key="stars_mode")
filters = None
if mode == "id":
    typed = st.text_input("light-curve id (sector-camera-ccd-label)", key="stars_id",
                          placeholder="14-1-1-21")
    if typed.strip():
        st.session_state["star_id"] = typed.strip()
elif mode == "sky position":
    c = st.columns(3)
    ra = c[0].number_input("RA (deg)", 0.0, 360.0, 0.0, format="%.5f", key="stars_ra")
    dec = c[1].number_input("Dec (deg)", -90.0, 90.0, 0.0, format="%.5f", key="stars_dec")
    radius = c[2].number_input("radius (deg)", 0.0001, 30.0, 1.0, format="%.4f", key="stars_radius")
    filters = {"ra": ra, "dec": dec, "radius": radius}
else:
    c = st.columns(3)
    scale = c[0].selectbox("brightness", ["flux (e⁻/s)", "TESS magnitude"], key="stars_scale")
    # empty bounds: no limit on that side
    if scale == "TESS magnitude":
        lo = c[1].number_input("Tmag from", -5.0, 25.0, None, key="stars_tmag_min")
        hi = c[2].number_input("Tmag to", -5.0, 25.0, None, key="stars_tmag_max")
        filters = {"tmag_min": lo, "tmag_max": hi}
    else:
        lo = c[1].number_input("flux from", None, None, None, key="stars_flux_min")
        hi = c[2].number_input("flux to", None, None, None, key="stars_flux_max")
        filters = {"flux_min": lo, "flux_max": hi}

if filters is not None:
    results = common.call(api.lightcurves, MAX_RESULTS, **filters)
    if not results:
        st.info("no light curves match")
    else:
        if mode == "brightness":       # the API lists by label: show the brightest first
            results.sort(key=lambda r: -(r.get("median_flux") or 0))
        table = pd.DataFrame(results)
        shown = [c for c in ("id",) + META_FIELDS if c in table]
        st.caption(f"{len(results)} light curves" + (f" (first {MAX_RESULTS})"
                                                      if len(results) >= MAX_RESULTS else ""))
        st.dataframe(table[shown], hide_index=True, height=240, key="stars_results")
        ids = [r["id"] for r in results]
        current = st.session_state.get("star_id")
        picked = st.selectbox("open star", ids, key="stars_pick",
                              index=ids.index(current) if current in ids else 0)
        st.session_state["star_id"] = picked

star_id = st.session_state.get("star_id")
if not star_id:
    st.stop()

# --- the star ------------------------------------------------------------------------
st.header(f"Star {star_id}")
st.query_params["id"] = star_id
lc = common.call(common.lightcurve, url, star_id)
n_cadences = lc.get("n_cadences") or len(lc.get("time") or [])
for column, (label, value, fmt) in zip(st.columns(6), [
        ("RA (deg)", lc.get("ra"), "{:.4f}"), ("Dec (deg)", lc.get("dec"), "{:+.4f}"),
        ("Tmag", lc.get("tmag"), "{:.2f}"), ("median flux (e⁻/s)", lc.get("median_flux"), "{:.1f}"),
        ("1-h RMS (ppm)", lc.get("rms_1h_ppm"), "{:.0f}"), ("cadences", n_cadences, "{}")]):
    column.metric(label, "–" if value is None else fmt.format(value))

left, right = st.columns([1, 2])
with left:
    st.subheader("Aperture")
    ap = common.call(common.aperture, url, star_id, stop=False)
    if ap:
        cube = next((c for c in common.call(common.cubes, url) if c["cube"] == ap.get("cube")), {})
        origin = cube.get("origin") or (0, 0)
        sumimage = common.call(common.image, url, ap["cube"], "sumimage", 0, stop=False)
        if sumimage is not None:
            rows, cols = plots.cutout_bounds(ap.get("pixels"), sumimage.shape, origin, margin=12)
            cut_origin = (int(origin[0]) + rows.start, int(origin[1]) + cols.start)
            mask = plots.aperture_mask([ap], (rows.stop - rows.start, cols.stop - cols.start),
                                       cut_origin)
            st.plotly_chart(plots.image_figure(sumimage[rows, cols], "sum image", mask=mask,
                                               origin=cut_origin), key="star_aperture")
            st.caption(f"{ap.get('n_pixels', int(mask.sum()))} pixels · cube {ap['cube']}"
                       + (f" · star {_star_name(ap['star'])}" if ap.get("star") else ""))
with right:
    st.subheader("Light curve")
    st.plotly_chart(plots.lightcurve_figure(lc), key="star_lightcurve", width="stretch")
    quality = np.array([q or 0 for q in lc.get("quality") or []])
    st.caption(f"{int((quality != 0).sum())} of {quality.size} cadences quality-flagged "
               "(red crosses); drag to zoom, double-click to reset")

st.subheader("Power spectrum")
try:
    spectrum = common.spectrum(url, star_id)
except common.ApiError as exc:
    spectrum = None
    # a light curve too short for a spectrum is a normal answer (404), not a failure
    if exc.status == 404:
        st.info(exc.detail)
    else:
        st.error(str(exc))
if spectrum:
    spec_col, peak_col = st.columns([3, 1])
    spec_col.plotly_chart(plots.spectrum_figure(spectrum), key="star_spectrum", width="stretch")
    peaks = plots.strongest_peaks(spectrum)
    with peak_col:
        st.markdown("**Strongest frequencies**")
        if peaks:
            st.dataframe(pd.DataFrame(peaks).assign(
                period_h=lambda d: 1e6 / d["frequency_uhz"] / 3600), hide_index=True,
                key="star_peaks")
        else:
            st.info("no peaks")

st.subheader("Download")
d1, d2, _ = st.columns([1, 1, 4])
name = f"tess-{star_id}"


def _file(fmt: str):
    """Deferred download: the bytes are fetched from the API only when pressed."""
    def fetch() -> bytes:
        with common.ApiClient(url, api_key=None) as fresh:
            return fresh.lightcurve_file(star_id, fmt)
    return fetch


d1.download_button("FITS", _file("fits"), file_name=f"{name}.fits", mime="application/fits",
                   key="star_fits", on_click="ignore")
d2.download_button("CSV", _file("csv"), file_name=f"{name}.csv", mime="text/csv",
                   key="star_csv", on_click="ignore")
