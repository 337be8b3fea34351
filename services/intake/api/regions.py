"""Regions over HTTP."""

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from services.events.vocabulary import CountyStatus, RegionLevel
from services.intake.api.schemas import RegionDetail, RegionPublic
from services.intake.regions import service as regions
from services.kit.access import Principal, require
from services.kit.problems import MEDIA_TYPE, Problem
from services.kit.session import SessionDep

router = APIRouter(prefix="/v1/regions", tags=["regions"])
AnyKey = Annotated[Principal, Depends(require())]


@router.get("", response_model=list[RegionPublic],
            summary="Regions inside the key's region (and the regions above it), by code")
def list_regions(session: SessionDep, principal: AnyKey, level: RegionLevel | None = None,
                 parent: Annotated[str | None, Query(pattern=r"^[0-9]{6}$")] = None,
                 status: CountyStatus | None = None) -> list:
    return [r for r in regions.list_regions(session=session, level=level, parent=parent, status=status)
            if principal.sees(r.code)]


@router.get("/{code}", response_model=RegionDetail, summary="One region with its parent and children",
            responses={404: {"description": "Unknown region", "content": {MEDIA_TYPE: {}}}})
def get_region(code: Annotated[str, Path(pattern=r"^[0-9]{6}$")], session: SessionDep, principal: AnyKey) -> dict:
    if not principal.sees(code):
        raise Problem(404, "not-found", "Not found", f"unknown region {code}")
    region, parent, children = regions.get_region(session=session, code=code)
    return {**region.model_dump(), "parent": parent, "children": [c for c in children if principal.covers(c.code)]}
