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
    position = pagination.decode(cursor, {"after": str})
    day = today(settings, clock)
    rows = findings.page(session=session, scope=scope, state=state, severity=severity, today=day,
                         after=position["after"] if position else None, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return FindingPage(items=[findings.public(r, day) for r in rows],
                       next_cursor=pagination.encode({"after": rows[-1].finding_id}) if more else None)


@router.get("/{finding_id}", response_model=FindingDetail, summary="One finding with its history",
            responses={404: {"description": "Unknown finding", "content": {MEDIA_TYPE: {}}}})
def get_finding(finding_id: Annotated[str, Path(max_length=64)], session: SessionDep, settings: SettingsDep,
                clock: ClockDep, principal: EventsReader) -> dict:
    entry, history = findings.get(session=session, finding_id=finding_id)
    if not principal.covers(entry.region_code):
        raise Problem(404, "not-found", "Not found", f"unknown finding {finding_id}")
    return {**findings.public(entry, today(settings, clock)), "history": [h.model_dump() for h in history]}
