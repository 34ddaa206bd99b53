"""The Streamlit app of tess-pipeline: ``streamlit run pipeline/gui/app.py`` (or
``tess-pipeline gui``). It reads everything through the HTTP API at TESS_API_URL."""

from pathlib import Path

import streamlit as st

from pipeline.gui.common import sidebar

# not "pages/": Streamlit would also auto-discover that folder and bypass st.navigation
VIEWS = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="tess-pipeline", page_icon=":material/satellite_alt:", layout="wide")
navigation = st.navigation([
    st.Page(VIEWS / "overview.py", title="Overview", icon=":material/monitor_heart:", default=True),
    st.Page(VIEWS / "frames.py", title="Frames", icon=":material/image:"),
    st.Page(VIEWS / "stars.py", title="Stars", icon=":material/star:"),
    st.Page(VIEWS / "jobs.py", title="Jobs", icon=":material/construction:"),
])
sidebar()
navigation.run()
