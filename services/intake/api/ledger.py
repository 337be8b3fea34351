"""The rectification ledger over HTTP."""

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query

from services.events.vocabulary import Severity
from services.intake.api.deps import ClockDep, DirectoryDep, EventsReader, SettingsDep, today, visible_place
from services.intake.api.schemas import FindingDetail, FindingPage
from services.intake.findings import service as findings
from services.kit import pagination
from services.kit.problems import MEDIA_TYPE, Problem
from services.kit.session import SessionDep

REGION_SCOPE = "A county, a prefecture (its counties) or the province"
router = APIRouter(prefix="/v1/findings", tags=["ledger"])
State = Literal["open", "reported", "verified", "disputed", "withdrawn", "overdue"]


@router.get("", response_model=FindingPage, summary="Findings and their rectification state")
def list_findings(
    session: SessionDep, directory: DirectoryDep, settings: SettingsDep, clock: ClockDep, principal: EventsReader,
    region_code: Annotated[str | None, Query(pattern=r"^[0-9]{6}$", description=REGION_SCOPE)] = None,
    state: Annotated[State | None, Query(description="`overdue`: open or reported past the deadline")] = None,
    severity: Severity | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> FindingPage:
    scope = visible_place(directory, principal, region_code)
    position = pagination.decode(cursor, {"after": str, "region_code": str})
    day = today(settings, clock)
    rows = findings.page(session=session, scope=scope, state=state, severity=severity, today=day,
                         after=(position["after"], position["region_code"]) if position else None, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    last = {"after": rows[-1].finding_id, "region_code": rows[-1].region_code} if more else None
    return FindingPage(items=[findings.public(r, day) for r in rows],
                       next_cursor=pagination.encode(last) if last else None)


@router.get("/{region_code}/{finding_id}", response_model=FindingDetail, summary="One finding with its history",
            description="A finding is named by its county and its id: finding ids are unique within a county "
                        "only, and two counties may each have a finding `F-0001`. A finding of a county outside "
                        "the key's region is answered exactly like one that does not exist.",
            responses={404: {"description": "No such finding in that county (or a county outside the key's region)",
                             "content": {MEDIA_TYPE: {}}}})
def get_finding(region_code: Annotated[str, Path(pattern=r"^[0-9]{6}$", description="The finding's county")],
                finding_id: Annotated[str, Path(max_length=64)], session: SessionDep, settings: SettingsDep,
                clock: ClockDep, principal: EventsReader) -> dict:
    if not principal.covers(region_code):  # before any read: not a row is loaded for a county the key cannot see
        raise findings.not_found(region_code, finding_id)
    entry, history = findings.get(session=session, region_code=region_code, finding_id=finding_id)
    return {**findings.public(entry, today(settings, clock)), "history": [h.model_dump() for h in history]}


@router.get("/{finding_id}", include_in_schema=False)
def moved(finding_id: Annotated[str, Path(max_length=64)], principal: EventsReader) -> None:
    """The route before finding ids were per county: the same pointer to the new one for any id."""
    raise Problem(404, "not-found", "Not found", "a finding is named by its county: "
                  "GET /v1/findings/{region_code}/{finding_id}")
