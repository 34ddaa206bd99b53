"""Request dependencies: the API state, the API key check, shared query parameters."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Query, Request

from pipeline.api.pagination import MAX_LIMIT
from pipeline.api.state import ApiState

API_KEY_HEADER = "X-API-Key"
INT32 = 2**31 - 1


async def get_state(request: Request) -> ApiState:
    # async: resolving it must not take one of the request threads (see /health)
    return request.app.state.api


State = Annotated[ApiState, Depends(get_state)]


def require_api_key(state: State,
                    x_api_key: Annotated[str | None, Header(alias=API_KEY_HEADER, max_length=1024,
                                                            description="the server's TESS_API_KEY")] = None) -> None:
    """Write endpoints: the ``X-API-Key`` header must equal the server's key (compared
    in constant time; the key is never logged or echoed)."""
    expected = state.api_key
    if not expected:
        raise HTTPException(401, "write endpoints are disabled: the server has no API key "
                                 "configured (set TESS_API_KEY)", headers={"WWW-Authenticate": "ApiKey"})
    if x_api_key is None:
        raise HTTPException(401, f"missing API key: send it in the {API_KEY_HEADER} header",
                            headers={"WWW-Authenticate": "ApiKey"})
    if not hmac.compare_digest(x_api_key.encode("utf-8", "surrogateescape"),
                               expected.encode("utf-8", "surrogateescape")):
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "ApiKey"})


ApiKey = Depends(require_api_key)

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"items per page (1..{MAX_LIMIT})")]
PageToken = Annotated[str | None, Query(max_length=4096, description="next_page_token of the previous page")]
Sector = Annotated[int | None, Query(ge=1, le=9999, description="TESS sector")]
Camera = Annotated[int | None, Query(ge=1, le=4, description="camera 1..4")]
Ccd = Annotated[int | None, Query(ge=1, le=4, description="CCD 1..4")]
