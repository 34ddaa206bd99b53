"""A small HTTP client for the pipeline's API (``pipeline.api``), used by the GUI.

Every call raises ``ApiError`` with a message a person can act on: the API is not
reachable, a key is missing, a parameter is wrong (the API's ``detail``). The GUI
never talks to the store or the catalog directly — only through these calls."""

from __future__ import annotations

import io
import os
from typing import Any, Iterable, Iterator
from urllib.parse import quote

import httpx
import numpy as np

DEFAULT_API_URL = "http://127.0.0.1:8000"
IMAGE_KINDS = ("flux", "corrected", "background", "sumimage", "pixel_flags")
PAGE_LIMIT = 1000          # the API's largest page


class ApiError(RuntimeError):
    """A failed API call: ``status`` is the HTTP status (None when unreachable),
    ``detail`` the API's own message (else the whole message)."""

    def __init__(self, message: str, status: int | None = None, detail: str | None = None):
        super().__init__(message)
        self.status = status
        self.detail = detail or message


def api_url(url: str | None = None) -> str:
    """The API's base URL: ``url``, else ``TESS_API_URL``, else the local default."""
    return (url or os.environ.get("TESS_API_URL") or DEFAULT_API_URL).rstrip("/")


class ApiClient:
    """Calls of the pipeline's HTTP API. ``api_key`` (else ``TESS_API_KEY``) is sent
    only with the write calls (inject, submit, cancel)."""

    def __init__(self, url: str | None = None, api_key: str | None = None,
                 timeout: float = 30.0):
        self.url = api_url(url)
        self.api_key = api_key if api_key is not None else os.environ.get("TESS_API_KEY")
        self._http = httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- transport ---------------------------------------------------------------
    def _request(self, method: str, path: str, *, ok: Iterable[int] = (), write: bool = False,
                 **kwargs) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if write:
            if not self.api_key:
                raise ApiError("this action needs an API key (enter it, or set TESS_API_KEY)", 401)
            headers["X-API-Key"] = self.api_key
        # drop unset filters so the API applies its defaults
        if "params" in kwargs:
            kwargs["params"] = {k: v for k, v in kwargs["params"].items() if v is not None}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TimeoutException as exc:
            raise ApiError(f"the API at {self.url} did not answer {method} {path} in time "
                           f"({exc.__class__.__name__})") from exc
        except httpx.TransportError as exc:
            raise ApiError(f"cannot reach the API at {self.url} ({exc.__class__.__name__}: "
                           f"{exc}); is `tess-pipeline api` running and TESS_API_URL right?") from exc
        if response.is_success or response.status_code in ok:
            return response
        detail = _detail(response)
        raise ApiError(f"{method} {path}: HTTP {response.status_code}: {detail}", response.status_code,
                       detail)

    def _json(self, method: str, path: str, **kwargs) -> Any:
        return self._request(method, path, **kwargs).json()

    def paged(self, path: str, params: dict | None = None, max_items: int | None = None,
              page_size: int = PAGE_LIMIT) -> Iterator[dict]:
        """Items of a paginated list, following ``next_page_token`` up to ``max_items``."""
        params = dict(params or {})
        token, seen = None, 0
        while True:
            limit = page_size if max_items is None else max(1, min(page_size, max_items - seen))
            body = self._json("GET", path, params={**params, "limit": limit, "page_token": token})
            for item in body.get("items", []):
                yield item
                seen += 1
                if max_items is not None and seen >= max_items:
                    return
            token = body.get("next_page_token")
            if not token:
                return

    # --- services --------------------------------------------------------------
    def health(self) -> dict:
        """The health document; a 503 (a service down) is an answer, not an error."""
        return self._json("GET", "/health", ok=(503,))

    def stats(self) -> dict:
        return self._json("GET", "/stats")

    # --- frames and cubes --------------------------------------------------------
    def cubes(self) -> list[dict]:
        return self._json("GET", "/staging/cubes").get("items", [])

    def raw_files(self, max_items: int | None = None, **filters) -> list[dict]:
        return list(self.paged("/raw", filters, max_items=max_items))

    def staging_frames(self, cube: str, max_items: int | None = None) -> list[dict]:
        """The frames of one staging cube (time order)."""
        return list(self.paged("/staging", {"cube": cube}, max_items=max_items))

    def image(self, cube: str, kind: str, index: int = 0) -> np.ndarray:
        """One 2-D image of a cube (``kind`` in IMAGE_KINDS) as a numpy array."""
        if kind not in IMAGE_KINDS:
            raise ApiError(f"unknown image kind {kind!r}; choose one of {', '.join(IMAGE_KINDS)}")
        response = self._request("GET", f"/staging/cubes/{_segment(cube)}/image",
                                 params={"kind": kind, "index": int(index)})
        try:
            return np.load(io.BytesIO(response.content), allow_pickle=False)
        except ValueError as exc:
            raise ApiError(f"the API sent an image of {cube} ({kind}) that is not .npy: {exc}") from exc

    # --- curated -----------------------------------------------------------------
    def apertures(self, max_items: int | None = None, **filters) -> list[dict]:
        return list(self.paged("/curated/apertures", filters, max_items=max_items))

    def aperture(self, aperture_id: str) -> dict:
        return self._json("GET", f"/curated/apertures/{_segment(aperture_id)}")

    def lightcurves(self, max_items: int | None = None, **filters) -> list[dict]:
        return list(self.paged("/curated/lightcurves", filters, max_items=max_items))

    def lightcurve(self, lightcurve_id: str) -> dict:
        return self._json("GET", f"/curated/lightcurves/{_segment(lightcurve_id)}", params={"format": "json"})

    def lightcurve_file(self, lightcurve_id: str, fmt: str) -> bytes:
        """The light curve as a file: ``fmt`` "fits" or "csv"."""
        if fmt not in ("fits", "csv"):
            raise ApiError(f"unknown light-curve format {fmt!r}; choose fits or csv")
        return self._request("GET", f"/curated/lightcurves/{_segment(lightcurve_id)}",
                             params={"format": fmt}).content

    def spectrum(self, lightcurve_id: str) -> dict:
        return self._json("GET", f"/curated/lightcurves/{_segment(lightcurve_id)}/spectrum")

    # --- jobs --------------------------------------------------------------------
    def jobs(self, limit: int = 20, status: str | None = None) -> list[dict]:
        return list(self.paged("/jobs", {"status": status}, max_items=limit, page_size=limit))

    def job(self, job_id: str) -> dict:
        return self._json("GET", f"/jobs/{_segment(job_id)}")

    def submit(self, inputs: list[str] | None = None, cubes: list[str] | None = None) -> dict:
        return self._json("POST", "/jobs", write=True,
                          json={"inputs": list(inputs or []), "cubes": list(cubes) if cubes else None})

    def cancel(self, job_id: str) -> dict:
        return self._json("DELETE", f"/jobs/{_segment(job_id)}", write=True)

    def inject(self, files: list[tuple[str, bytes]]) -> list[dict]:
        """Upload FITS files (name, content) to the raw zone; per file the API's verdict."""
        if not files:
            raise ApiError("choose at least one FITS file to upload")
        parts = [("files", (name, data, "application/fits")) for name, data in files]
        return self._json("POST", "/inject", write=True, files=parts, timeout=300.0).get("files", [])


def _segment(value: str) -> str:
    """One path segment: a typed id with "/", "?" or ".." stays inside its endpoint."""
    return quote(str(value), safe="")


def _detail(response: httpx.Response) -> str:
    """The API's error message (``{"detail": ...}``), else the start of the body."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, list):      # FastAPI's 422: a list of {loc, msg}
        detail = "; ".join(f"{'.'.join(str(p) for p in d.get('loc', [])[1:])}: {d.get('msg')}"
                           if isinstance(d, dict) else str(d) for d in detail)
    if not detail:
        detail = response.text[:200] or response.reason_phrase
    return str(detail)
