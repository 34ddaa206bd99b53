"""Frames: one cadence of a staging cube — raw and background-corrected side by side,
the background model and pixel flags, with the CCD's apertures as contours."""

import streamlit as st

from pipeline.gui import common, plots

st.title("Frames")
url = common.current_url()
cubes = common.call(common.cubes, url)
if not cubes:
    st.info("no cubes in the staging zone yet — ingest some frames (Jobs page)")
    st.stop()


def _choose(label: str, options: list, key: str, fmt=str):
    return st.selectbox(label, sorted(set(options)), key=key, format_func=fmt)


cols = st.columns(4)
with cols[0]:
    sector = _choose("sector", [c["sector"] for c in cubes], "frames_sector")
with cols[1]:
    camera = _choose("camera", [c["camera"] for c in cubes if c["sector"] == sector], "frames_camera")
with cols[2]:
    ccd = _choose("CCD", [c["ccd"] for c in cubes if (c["sector"], c["camera"]) == (sector, camera)],
                  "frames_ccd")
matching = [c for c in cubes if (c["sector"], c["camera"], c["ccd"]) == (sector, camera, ccd)]
with cols[3]:
    # several cubes per CCD happen with cut-outs: let the user pick
    cube_id = _choose("cube", [c["cube"] for c in matching], "frames_cube")
cube = next(c for c in matching if c["cube"] == cube_id)
n_cadences = int(cube.get("n_cadences") or 0)
if n_cadences == 0:
    st.warning(f"cube {cube_id} has no cadences yet")
    st.stop()

index = 0
if n_cadences > 1:
    index = st.slider("cadence (index in the cube)", 0, n_cadences - 1, 0, key="frames_index")
frames = common.call(common.staging_frames, url, cube_id, stop=False) or []
frame = next((f for f in frames if f.get("cube_index") == index), None)
if frame:
    btjd = f"{frame['time']:.5f}" if frame.get("time") is not None else "–"
    st.caption(f"cadence {frame.get('cadenceno')} · BTJD {btjd} · "
               f"{frame.get('date_obs')} · quality {frame.get('quality')} · {frame.get('file')}")
else:
    st.caption(f"cube {cube_id}: cadence {index + 1} of {n_cadences}")

options = st.columns([2, 1, 1])
with options[0]:
    low, high = st.slider("percentile stretch", 0.0, 100.0, (1.0, 99.0), step=0.5,
                          key="frames_stretch")
with options[1]:
    show_apertures = st.checkbox("apertures as contours", value=True, key="frames_show_apertures")
with options[2]:
    limit = st.number_input("at most (brightest)", 1, 5000, 500, step=50, key="frames_ap_limit")

origin = cube.get("origin") or (0, 0)
mask, n_shown, n_total = None, 0, 0
if show_apertures:
    with st.spinner("apertures ..."):
        found = common.call(common.apertures_with_pixels, url, sector, camera, ccd, int(limit),
                            stop=False)
    if found:
        chosen, n_total = found
        chosen = [a for a in chosen if a.get("cube") in (None, cube_id)]
        n_shown = len(chosen)
        shape = tuple(cube.get("shape") or ())
        if len(shape) >= 2:
            mask = plots.aperture_mask(chosen, shape[-2:], origin)
st.markdown(f"**{n_shown} apertures shown**" + (f" of {n_total}" if n_total > n_shown else ""),
            help="the brightest apertures of this CCD, outlined in red")


def _panel(where, kind: str, title: str, colorscale: str = "Viridis", with_mask: bool = True):
    with where:
        image = common.call(common.image, url, cube_id, kind, index, stop=False)
        if image is None:
            st.info(f"no {kind} image for this cube (has the background stage run?)")
            return
        fig = plots.image_figure(image, title, mask=mask if with_mask else None,
                                 percentiles=(low, high), colorscale=colorscale, origin=origin,
                                 colorbar_title="flag bits" if kind == "pixel_flags" else "e⁻/s")
        st.plotly_chart(fig, key=f"frames_{kind}", width="stretch")


left, right = st.columns(2)
_panel(left, "flux", "raw (calibrated FFI)", "Gray")
_panel(right, "corrected", "background-corrected")
left, right = st.columns(2)
_panel(left, "background", "background model", "Cividis", with_mask=False)
_panel(right, "pixel_flags", "pixel flags", "Reds", with_mask=False)
