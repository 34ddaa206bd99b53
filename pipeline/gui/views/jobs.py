"""Jobs: start a run (on cubes already ingested, on files already in the raw zone, or on
FITS files uploaded here), follow its progress, cancel it."""

import os

import pandas as pd
import streamlit as st

from pipeline.gui import common

STAGES = ("ingest", "background", "apertures", "lightcurves")
ACTIVE = ("queued", "running")

st.title("Jobs")
url = common.current_url()
configured = bool(os.environ.get("TESS_API_KEY"))
st.text_input("API key", type="password", key="api_key",
              help="needed to start or cancel jobs and to upload",
              placeholder="the GUI's configured key (TESS_API_KEY) is used when empty" if configured
              else "needed to start or cancel jobs and to upload")
api = common.client()
# one reachability check up front, so an unreachable API is one message, not five
health = common.call(api.health)
scheduler_dashboard = health.get("services", {}).get("scheduler", {}).get("dashboard")


def _submitted(job: dict | None) -> None:
    if job:
        # follow the new job: set before the job selector below is drawn
        st.session_state["job_id"] = st.session_state["jobs_pick"] = job["id"]
        st.success(f"job **{job['id']}** {job.get('status', 'queued')}")


# --- submit --------------------------------------------------------------------------
st.subheader("Start a run")
on_cubes, on_inputs, on_upload = st.tabs(["ingested cubes", "files in the raw zone",
                                          "upload FITS"])
with on_cubes:
    cubes = common.call(common.cubes, url, stop=False) or []
    chosen = st.multiselect("cubes (background, apertures and light curves are redone)",
                            [c["cube"] for c in cubes], key="jobs_cubes")
    if st.button("Run on these cubes", key="jobs_run_cubes", disabled=not chosen):
        _submitted(common.call(api.submit, inputs=[], cubes=chosen, stop=False))
with on_inputs:
    raw = common.call(api.raw_files, 1000, stop=False) or []
    names = {f["key"]: f.get("file") or f["key"] for f in raw if f.get("key")}
    inputs = st.multiselect(f"files in the raw zone ({len(names)}{'+' if len(raw) >= 1000 else ''})",
                            list(names), format_func=names.get, key="jobs_inputs")
    if st.button("Run on these files", key="jobs_run_inputs", disabled=not inputs):
        _submitted(common.call(api.submit, inputs=inputs, stop=False))
with on_upload:
    uploads = st.file_uploader("FITS files (calibrated FFIs, TPFs, cut-outs)",
                               type=["fits", "fit", "fz", "gz"], accept_multiple_files=True,
                               key="jobs_upload")
    run_after = st.checkbox("start a run on the accepted files", value=True, key="jobs_run_after")
    if st.button("Upload", key="jobs_inject", disabled=not uploads):
        verdicts = common.call(api.inject, [(f.name, f.getvalue()) for f in uploads], stop=False)
        if verdicts:
            st.dataframe(pd.DataFrame(verdicts), hide_index=True, key="jobs_verdicts")
            keys = [v["key"] for v in verdicts if v.get("status") == "accepted" and v.get("key")]
            if run_after and keys:
                _submitted(common.call(api.submit, inputs=keys, stop=False))
            elif not keys:
                st.warning("no file was accepted: nothing to run")

# --- follow --------------------------------------------------------------------------
head, link = st.columns([4, 1], vertical_alignment="bottom")
head.subheader("Follow a job")
if scheduler_dashboard:
    link.link_button("Dask dashboard", scheduler_dashboard)
jobs = common.call(api.jobs, 20)
if not jobs:
    st.info("no jobs yet")
    st.stop()
ids = [j.get("_id") or j.get("id") for j in jobs]
by_id = dict(zip(ids, jobs))
wanted = st.session_state.get("job_id")
if wanted and wanted not in by_id:       # submitted a moment ago, not yet on the first page
    ids.insert(0, wanted)
if st.session_state.get("jobs_pick") not in ids:
    st.session_state["jobs_pick"] = ids[0]
job_id = st.selectbox("job", ids, key="jobs_pick",
                      format_func=lambda i: f"{i} · {by_id.get(i, {}).get('status', '…')}")
auto = st.toggle("refresh every 2 s while it runs", value=True, key="jobs_auto")


def show_job(polling: bool = False) -> None:
    job = common.call(api.job, job_id, stop=False)
    if not job:
        return
    status = job.get("status", "unknown")
    if polling and status not in ACTIVE:
        st.rerun()          # finished: redraw the whole page once, which stops the polling
    box = {"done": st.success, "failed": st.error, "cancelled": st.warning}.get(status, st.info)
    box(f"**{status}** · created {common.when(job.get('created'))} · started "
        f"{common.when(job.get('started'))} · finished {common.when(job.get('finished'))}")
    progress = job.get("progress") or {}
    timings = job.get("timings") or {}
    for stage in [s for s in STAGES if s in progress] + [s for s in progress if s not in STAGES]:
        done, total = int(progress[stage].get("done", 0)), int(progress[stage].get("total", 0))
        fraction = done / total if total else (1.0 if status == "done" else 0.0)
        seconds = f" · {timings[stage]:.1f} s" if timings.get(stage) is not None else ""
        st.progress(min(1.0, fraction), text=f"{stage}: {done}/{total}{seconds}")
    if not progress:
        st.caption("no progress reported yet")
    counts = job.get("counts") or {}
    if counts:
        st.dataframe(pd.DataFrame([counts]), hide_index=True, key=f"job_counts_{job_id}")
    if job.get("error"):
        st.error(job["error"])
    if job.get("rejected"):
        st.markdown("**Rejected files**")
        st.dataframe(pd.DataFrame(job["rejected"]), hide_index=True, key=f"job_rejected_{job_id}")
    if job.get("dashboard") and job["dashboard"] != scheduler_dashboard:
        st.link_button("Dask dashboard of this job", job["dashboard"])
    if status in ACTIVE:
        if st.button("Cancel job", key=f"cancel_{job_id}", disabled=bool(job.get("cancel_requested"))):
            answer = common.call(api.cancel, job_id, stop=False)
            if answer:
                st.warning(f"cancel requested for {job_id}")
        st.button("Refresh", key=f"refresh_{job_id}")     # a click reruns this part


if auto and by_id.get(job_id, {}).get("status", "queued") in ACTIVE:
    st.fragment(show_job, run_every=2.0)(polling=True)
else:
    show_job()
