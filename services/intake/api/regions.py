"""Regions over HTTP."""

from typing import Annotated

from fastapi import APIRouter, Path, Query

from services.events.vocabulary import CountyStatus, RegionLevel
from services.intake.api.schemas import RegionDetail, RegionPublic
from services.intake.regions import service as regions
from services.kit.db import SessionDep
from services.kit.problems import MEDIA_TYPE

router = APIRouter(prefix="/v1/regions", tags=["regions"])


@router.get("", response_model=list[RegionPublic], summary="Regions, by code")
def list_regions(session: SessionDep, level: RegionLevel | None = None,
                 parent: Annotated[str | None, Query(pattern=r"^\d{6}$")] = None,
                 status: CountyStatus | None = None) -> list:
    return regions.list_regions(session=session, level=level, parent=parent, status=status)


@router.get("/{code}", response_model=RegionDetail, summary="One region with its parent and children",
            responses={404: {"description": "Unknown region", "content": {MEDIA_TYPE: {}}}})
def get_region(code: Annotated[str, Path(pattern=r"^\d{6}$")], session: SessionDep) -> dict:
    region, parent, children = regions.get_region(session=session, code=code)
    return {**region.model_dump(), "parent": parent, "children": children}
