"""``GET /staging/cubes`` (the zarr cubes of the staging zone) and
``GET /staging/cubes/{cube}/image``: one 2-D image of a cube as ``.npy`` bytes."""

from __future__ import annotations

import io
import posixpath
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Path, Query
from starlette.responses import Response

from pipeline.api.deps import INT32, State
from pipeline.api.keys import BadKey, check_cube_id
from pipeline.api.models import CubeInfo, Page, errors
from pipeline.api.responses import JSON
from pipeline.store import Cube

router = APIRouter(tags=["staging"])

ImageKind = Literal["flux", "corrected", "background", "sumimage", "pixel_flags"]
MANUAL_EXCLUDE = 2     # pixel flag (kernels.flags): excluded pixels are NaN in "corrected"


def _cube_ids(store) -> list[str]:
    folder = store.path("staging")
    try:
        if not store.is_local:
            store.fs.invalidate_cache(folder)
        names = store.fs.ls(folder, detail=False)
    except FileNotFoundError:
        return []
    ids = [posixpath.basename(n.rstrip("/"))[:-len(".zarr")] for n in names if n.rstrip("/").endswith(".zarr")]
    return sorted(ids)


def _describe(cube: Cube) -> dict | None:
    try:
        group = cube.group("r")
    except (FileNotFoundError, KeyError, ValueError):
        return None                   # a half-created cube: not listed
    attrs = dict(group.attrs)
    arrays = sorted(group.array_keys())
    n = int(group["time"].shape[0]) if "time" in arrays else 0
    return {"cube": cube.cube_id, "sector": attrs.get("sector"), "camera": attrs.get("camera"),
            "ccd": attrs.get("ccd"), "n_cadences": n, "shape": attrs.get("shape"),
            "origin": attrs.get("origin"), "arrays": arrays}


@router.get("/staging/cubes", response_model=Page[CubeInfo], responses=errors(503),
            summary="The staging cubes (one zarr group per sector/camera/ccd or cut-out)")
def list_cubes(state: State):
    store = state.store
    items = [d for d in (_describe(Cube(store, cid)) for cid in _cube_ids(store)) if d is not None]
    return JSON({"items": items, "next_page_token": None})


def _open(state, cube_id: str):
    try:
        check_cube_id(cube_id)
    except BadKey as exc:
        raise HTTPException(422, f"path parameter 'cube': {exc}") from None
    cube = Cube(state.store, cube_id)
    if not cube.exists():
        raise HTTPException(404, f"no cube {cube_id!r} in the staging zone (see /staging/cubes)")
    return cube, cube.group("r")


def _frame(group, name: str, index: int, cube_id: str) -> np.ndarray:
    if name not in group:
        stage = "ingest" if name == "flux" else "background"
        raise HTTPException(404, f"cube {cube_id!r} has no {name} yet (the {stage} stage writes it)")
    array = group[name]
    n = array.shape[0]
    if index >= n:
        raise HTTPException(404, f"cube {cube_id!r} has {n} cadences: index must be 0..{n - 1}")
    return np.asarray(array[index])


@router.get("/staging/cubes/{cube}/image", responses={
    200: {"content": {"application/octet-stream": {}},
          "description": "a 2-D array in numpy's .npy format (np.load(io.BytesIO(body)))"},
    **errors(404, 422, 503)}, response_class=Response,
    summary="One image of a cube: flux, background-corrected flux, background, sum image or pixel flags")
def cube_image(state: State, cube: Annotated[str, Path(max_length=200)],
               kind: Annotated[ImageKind, Query(description="which image")] = "flux",
               index: Annotated[int, Query(ge=0, le=INT32, description="cadence index in the cube "
                                                                       "(ignored for sumimage)")] = 0):
    _, group = _open(state, cube)
    if kind == "sumimage":
        if "sumimage" not in group:
            raise HTTPException(404, f"cube {cube!r} has no sumimage yet (the background stage writes it)")
        image = np.asarray(group["sumimage"][...])
    elif kind == "corrected":
        flux = _frame(group, "flux", index, cube)
        background = _frame(group, "background", index, cube)
        image = flux - background
        if "pixel_flags" in group:
            flags = np.asarray(group["pixel_flags"][index])
            image = np.where(flags & MANUAL_EXCLUDE, np.nan, image).astype(np.float32)
    else:
        image = _frame(group, kind, index, cube)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(image), allow_pickle=False)
    return Response(buf.getvalue(), media_type="application/octet-stream",
                    headers={"Content-Disposition": f'inline; filename="{cube}-{kind}-{index}.npy"'})
