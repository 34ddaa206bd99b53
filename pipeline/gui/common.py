"""What every page shares: the API client for this session, cached reads, and how a
failed call is shown (a clear message, then the page stops)."""

from __future__ import annotations

import datetime as dt
import os
from typing import Any, Callable

import numpy as np
import streamlit as st

from pipeline.gui.client import ApiClient, ApiError, api_url

# cached reads: data that changes only when a job runs (images, documents) lives for a
# few minutes; anything about progress or health is never cached
_TTL = 300


def current_url() -> str:
    """The API URL: TESS_API_URL. Deliberately not editable in the page, or a visitor
    could point the GUI server (and the key it holds) at any host."""
    return api_url()


def current_key() -> str | None:
    """The key typed on the Jobs page, else the GUI's own TESS_API_KEY. The latter stays
    on the server: it is never put into a widget, so no browser ever receives it."""
    return st.session_state.get("api_key") or os.environ.get("TESS_API_KEY") or None


def client() -> ApiClient:
    return ApiClient(current_url(), api_key=current_key())


def call(fn: Callable[..., Any], *args, stop: bool = True, **kwargs) -> Any:
    """``fn(*args)``; on an ApiError show it and stop the page (or return None)."""
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        st.error(str(exc))
        if stop:
            st.stop()
        return None


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def when(value) -> str:
    """An API timestamp (ISO 8601, UTC) as "2026-11-28 10:32:00 UTC"; "–" when unset."""
    if not value:
        return "–"
    try:
        stamp = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(dt.timezone.utc)
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


# --- cached reads (keyed by the API URL so two backends never mix) ------------------
@st.cache_data(ttl=_TTL, show_spinner=False)
def cubes(url: str) -> list[dict]:
    with ApiClient(url) as api:
        return api.cubes()


@st.cache_data(ttl=_TTL, show_spinner=False, max_entries=64)
def image(url: str, cube: str, kind: str, index: int) -> np.ndarray:
    with ApiClient(url) as api:
        return api.image(cube, kind, index)


@st.cache_data(ttl=_TTL, show_spinner=False)
def staging_frames(url: str, cube: str) -> list[dict]:
    with ApiClient(url) as api:
        return api.staging_frames(cube)


@st.cache_data(ttl=_TTL, show_spinner=False)
def apertures_with_pixels(url: str, sector: int, camera: int, ccd: int,
                          limit: int) -> tuple[list[dict], int]:
    """Up to ``limit`` apertures of a CCD with their pixels, and how many there are.
    The list call has no pixels, so each is fetched by id (a few threads at once)."""
    from concurrent.futures import ThreadPoolExecutor

    with ApiClient(url) as api:
        listed = api.apertures(sector=sector, camera=camera, ccd=ccd)
        chosen = sorted(listed, key=lambda a: -(a.get("flux") or 0))[:limit]
        missing = [a["id"] for a in chosen if "pixels" not in a]
        if missing:
            with ThreadPoolExecutor(4) as pool:
                full = dict(zip(missing, pool.map(api.aperture, missing)))
            chosen = [full.get(a["id"], a) for a in chosen]
        return chosen, len(listed)


@st.cache_data(ttl=_TTL, show_spinner=False)
def aperture(url: str, aperture_id: str) -> dict:
    with ApiClient(url) as api:
        return api.aperture(aperture_id)


@st.cache_data(ttl=_TTL, show_spinner=False, max_entries=32)
def lightcurve(url: str, lightcurve_id: str) -> dict:
    with ApiClient(url) as api:
        return api.lightcurve(lightcurve_id)


@st.cache_data(ttl=_TTL, show_spinner=False, max_entries=32)
def spectrum(url: str, lightcurve_id: str) -> dict:
    with ApiClient(url) as api:
        return api.spectrum(lightcurve_id)


def sidebar() -> None:
    """Which API this GUI reads (on every page)."""
    st.sidebar.caption(f"API: {current_url()} (TESS_API_URL)  \n"
                       f"images and light curves are cached for {_TTL // 60} min")
