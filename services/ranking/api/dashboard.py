"""What the dashboard's county page shows from the other services, fetched over their HTTP APIs
(services never import each other): the score and its explanation from scoring, the open and
overdue rectifications from intake."""

from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Path, Query, Request

from services.kit.access import Principal, require

router = APIRouter(prefix="/v1/dashboard", tags=["dashboard"])


async def _get(client: httpx.AsyncClient, url: str, params: dict[str, Any]) -> Any:
    """The JSON of a GET, or an {"unavailable": reason} the page can show instead."""
    try:
        r = await client.get(url, params=params)
    except httpx.HTTPError as exc:
        return {"unavailable": f"{type(exc).__name__}"}
    if r.status_code == 404:
        return None
    if r.status_code != 200:
        return {"unavailable": f"HTTP {r.status_code}"}
    return r.json()


@router.get("/county/{region_code}", summary="A county's score, explanation and rectifications, for the dashboard")
async def county(request: Request, region_code: Annotated[str, Path(pattern=r"^[0-9]{6}$")],
                 year: Annotated[int, Query(ge=2010, le=2100)],
                 principal: Annotated[Principal, Depends(require("scores:read", "events:read"))]) -> dict[str, Any]:
    principal.check_region(region_code)
    settings = request.app.state.settings
    scoring, intake = settings.scoring_base_url, settings.intake_base_url
    # the caller's own key goes along: the other services apply its scopes and region themselves
    auth = {"Authorization": request.headers["authorization"]}
    async with httpx.AsyncClient(timeout=5.0, headers=auth) as client:
        score = await _get(client, f"{scoring}/v1/scores/{region_code}", {"year": year})
        explanation = await _get(client, f"{scoring}/v1/scores/{region_code}/explanation",
                                 {"year": year, "limit": 200})
        open_ = await _get(client, f"{intake}/v1/findings", {"region_code": region_code, "state": "open", "limit": 100})
        overdue = await _get(client, f"{intake}/v1/findings",
                             {"region_code": region_code, "state": "overdue", "limit": 100})
    return {"region_code": region_code, "year": year, "score": score, "explanation": explanation,
            "open_findings": open_, "overdue_findings": overdue}
