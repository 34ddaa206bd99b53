"""Overview: health of each service, what the zones and collections hold, recent jobs."""

import pandas as pd
import streamlit as st

from pipeline.gui import common

st.title("tess-pipeline")
api = common.client()

st.button("Refresh", key="overview_refresh")      # any click reruns the page

# --- health --------------------------------------------------------------------------
health = common.call(api.health)
status = health.get("status", "unknown")
(st.success if status == "ok" else st.warning)(f"pipeline status: **{status}**")
services = health.get("services", {})
for column, (name, info) in zip(st.columns(max(1, len(services))), services.items()):
    ok = bool(info.get("ok"))
    latency = info.get("latency_ms")
    column.metric(name, "up" if ok else "DOWN",
                  delta=None if latency is None else f"{latency:.0f} ms",
                  delta_color="off", delta_arrow="off", border=True)
    if not ok and info.get("error"):
        column.error(info["error"])
dashboard = services.get("scheduler", {}).get("dashboard")
if dashboard:
    st.link_button("Dask dashboard", dashboard)

# --- stats ---------------------------------------------------------------------------
stats = common.call(api.stats, stop=False)
if stats:
    st.subheader("Store and catalog")
    zones, collections = stats.get("zones", {}), stats.get("collections", {})
    left, right = st.columns(2)
    left.dataframe(pd.DataFrame([{"zone": zone, "objects": z.get("objects"),
                                  "size": common.human_bytes(z.get("bytes"))}
                                 for zone, z in zones.items()]), hide_index=True)
    right.dataframe(pd.DataFrame([{"collection": name, "documents": n}
                                  for name, n in collections.items()]), hide_index=True)
    frames = stats.get("frames") or []
    if frames:
        st.markdown("**Frames per sector / camera / CCD**")
        st.dataframe(pd.DataFrame(frames), hide_index=True)
    by_status = stats.get("jobs") or {}
    if by_status:
        st.markdown("**Jobs by status:** " + ", ".join(f"{k} {v}" for k, v in by_status.items()))

# --- recent jobs ---------------------------------------------------------------------
st.subheader("Recent jobs")
jobs = common.call(api.jobs, 10, stop=False)
if jobs:
    st.dataframe(pd.DataFrame([{
        "id": job.get("_id") or job.get("id"), "status": job.get("status"),
        "created": common.when(job.get("created")), "finished": common.when(job.get("finished")),
        "inputs": len(job.get("inputs") or []), "cubes": ", ".join(job.get("cubes") or []),
        "error": job.get("error")} for job in jobs]), hide_index=True, key="recent_jobs")
elif jobs is not None:
    st.info("no jobs yet — start one on the Jobs page")
