"""The GUI's pages, run by Streamlit as scripts (st.navigation in ../app.py); a package
only so that a wheel ships them."""
