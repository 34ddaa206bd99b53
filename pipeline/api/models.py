"""Response and request shapes, for the OpenAPI document at /docs and for request
validation. Handlers return ready JSON (``responses.JSON``), so these describe the
responses without costing a validation pass on every light curve served."""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class ErrorBody(BaseModel):
    detail: str


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_page_token: str | None = Field(None, description="pass as page_token for the next page; "
                                                          "null on the last page")


class Frame(BaseModel):
    file: str
    sector: int
    camera: int
    ccd: int
    cadenceno: int
    time: float | None = Field(None, description="BTJD mid-exposure")
    date_obs: str | None = None
    quality: int | None = None
    key: str | None = Field(None, description="raw-zone key of the original file (for /download)")
    size: int | None = Field(None, description="bytes of the original file")


class StagingFrame(Frame):
    cube: str | None = None
    cube_index: int | None = None
    cube_key: str | None = Field(None, description="staging-zone key of the zarr cube")


class CubeInfo(BaseModel):
    cube: str
    sector: int | None = None
    camera: int | None = None
    ccd: int | None = None
    n_cadences: int
    shape: list[int] | None = None
    origin: list[int] | None = None
    arrays: list[str]


class Aperture(BaseModel):
    id: str = Field(description="<sector>-<camera>-<ccd>-<label>")
    sector: int
    camera: int
    ccd: int
    cube: str | None = None
    label: int | str
    row: float | None = None
    col: float | None = None
    ra: float | None = None
    dec: float | None = None
    n_pixels: int | None = None
    flux: float | None = None
    star: dict[str, Any] | None = None


class ApertureDetail(Aperture):
    pixels: list[list[int]] = Field(description="[[row, col], ...] in CCD science coordinates")


class LightCurveSummary(BaseModel):
    id: str
    sector: int
    camera: int
    ccd: int
    label: int | str
    ra: float | None = None
    dec: float | None = None
    tmag: float | None = None
    median_flux: float | None = None
    rms_1h_ppm: float | None = None
    ptp_ppm: float | None = None
    n_cadences: int | None = None


class LightCurveData(LightCurveSummary):
    time: list[float | None]
    cadenceno: list[int]
    flux: list[float | None]
    flux_err: list[float | None]
    flux_bkg: list[float | None]
    quality: list[int]
    centroid_row: list[float | None]
    centroid_col: list[float | None]


class Peak(BaseModel):
    model_config = ConfigDict(extra="allow")
    frequency_uhz: float | None
    amplitude_ppm: float | None


class SpectrumData(BaseModel):
    frequency_uhz: list[float | None]
    amplitude_ppm: list[float | None]
    peaks: list[Peak]


class ServiceStatus(BaseModel):
    model_config = ConfigDict(extra="allow")
    ok: bool
    latency_ms: float | None
    error: str | None


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    services: dict[str, ServiceStatus]


class ZoneStats(BaseModel):
    objects: int
    bytes: int


class FrameCount(BaseModel):
    sector: int
    camera: int
    ccd: int
    count: int


class Stats(BaseModel):
    zones: dict[str, ZoneStats]
    collections: dict[str, int]
    jobs: dict[str, int]
    frames: list[FrameCount]


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: list[str] = Field(default_factory=list, max_length=10_000,
                              description="raw-zone keys of files to ingest (as /inject returns them)")
    cubes: list[str] | None = Field(None, max_length=10_000,
                                    description="ids of cubes already ingested: run the later stages on them")


class JobCreated(BaseModel):
    id: str
    status: str


class JobCancelled(BaseModel):
    id: str
    status: str
    cancel_requested: bool


class InjectedFile(BaseModel):
    name: str
    status: Literal["accepted", "duplicate", "rejected"]
    reason: str | None
    key: str | None
    size: int
    sha256: str | None = None


class InjectResult(BaseModel):
    files: list[InjectedFile]


def errors(*codes: int) -> dict:
    """OpenAPI ``responses`` for the error statuses an endpoint can return."""
    return {code: {"model": ErrorBody} for code in codes}
