"""What scoring reads of a published record: the fields the engine uses, validated in one pass.

Intake validated every event against its full contract (services/events/v1.py) before storing and
publishing it. Parsing that contract again costs the worker more than everything else it does per
event (custom validators, every text field), so the worker reads records through this view:
pydantic models of only the fields the engine uses, with the constraints the engine relies on
(enumerations, ranges, aware times; numbers and flags strict, as in the contract), parsed straight
from the bytes (`validate_json`). Anything else in a record is ignored.

What this view rejects still goes to the dead-letter topic: bad JSON, an unknown type or
schema_version, a missing or mistyped field the engine needs. A record this view accepts but the
full contract would not (say, a description too long) can only come from outside intake; it is
scored like any other. tests/scoring/test_view.py keeps the view covering every (type, version)
of the registry and reading every record exactly as the full contract does.
"""

from datetime import date, datetime, timezone
from typing import Annotated, Literal, Union
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    TypeAdapter,
    ValidationError,
)

from services.events.registry import Recorded
from services.events.vocabulary import CountyStatus, DailyCheckKind, FindingCategory, Indicator, Severity

RegionCode = Annotated[str, Field(pattern=r"^[1-9]\d{5}$")]
Identifier = Annotated[str, Field(min_length=1, max_length=64)]
Moment = Annotated[AwareDatetime, Field(ge=datetime(2010, 1, 1, tzinfo=timezone.utc),
                                        lt=datetime(2100, 1, 1, tzinfo=timezone.utc))]


class View(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Finding(View):
    finding_id: Identifier
    category: FindingCategory
    indicator: Indicator
    severity: Severity
    deadline: date


class Inspection(View):
    team_id: Identifier
    villages_sampled: Annotated[StrictInt, Field(ge=0, le=10_000)]  # with the policy's households_per_village
    households_sampled: Annotated[StrictInt, Field(ge=0, le=1_000_000)]
    findings: Annotated[list[Finding], Field(max_length=500)] = []


class FindingStep(View):
    finding_id: Identifier


class DailyCheck(View):
    kind: DailyCheckKind
    items_failed: Annotated[StrictInt, Field(ge=0, le=1_000_000)]


class YearEnd(View):
    year: Annotated[StrictInt, Field(ge=2010, le=2100)]
    score: Annotated[StrictFloat, Field(ge=0, le=100, allow_inf_nan=False)]


class Status(View):
    status: CountyStatus


class ReturnRisk(View):
    household_id: Identifier


class Absence(View):
    team_id: Identifier
    inspector_id: Identifier
    approved: StrictBool


class Record(View):
    """The envelope and intake's additions (sequence, recorded_at)."""

    event_id: UUID
    schema_version: Literal[1]
    occurred_at: Moment
    region_code: RegionCode
    sequence: Annotated[int, Field(ge=0)]
    recorded_at: AwareDatetime


class InspectionRecorded(Record):
    type: Literal["inspection.recorded"]
    payload: Inspection


class FindingStepped(Record):
    type: Literal["rectification.reported", "rectification.verified", "rectification.rejected", "finding.disputed",
                  "finding.upheld", "finding.withdrawn"]
    payload: FindingStep


class DailyCheckRecorded(Record):
    type: Literal["daily_check.recorded"]
    payload: DailyCheck


class YearEndAssessmentRecorded(Record):
    type: Literal["year_end_assessment.recorded"]
    payload: YearEnd


class CountyStatusChanged(Record):
    type: Literal["county.status_changed"]
    payload: Status


class ReturnRiskChanged(Record):
    type: Literal["return_risk.flagged", "return_risk.cleared"]
    payload: ReturnRisk


class InspectorAbsenceRecorded(Record):
    type: Literal["inspector.absence_recorded"]
    payload: Absence


RECORDS = (InspectionRecorded, FindingStepped, DailyCheckRecorded, YearEndAssessmentRecorded, CountyStatusChanged,
           ReturnRiskChanged, InspectorAbsenceRecorded)
# Keys only in pydantic's string cache: a cached value made during a recomputation outlives it and
# keeps its allocator arena, so less of the every-county engine's memory went back before the
# worker's own engine was built (at 1M events, 324-326 → 318-320 MB on that path; docs/performance.md)
ADAPTER: TypeAdapter[Record] = TypeAdapter(Annotated[Union[RECORDS], Field(discriminator="type")],
                                           config=ConfigDict(cache_strings="keys"))


def decode(raw: bytes | str) -> Recorded:
    """A published record (Kafka value or export line) as the engine reads it; raises
    pydantic.ValidationError (a ValueError) for anything the view cannot read."""
    record = ADAPTER.validate_json(raw)
    return Recorded(sequence=record.sequence, recorded_at=record.recorded_at, event=record)  # type: ignore[arg-type]


def covered() -> set[tuple[str, int]]:
    """Every (type, schema_version) this view reads."""
    return {(t, 1) for m in RECORDS for t in m.model_fields["type"].annotation.__args__}


__all__ = ["ADAPTER", "RECORDS", "ValidationError", "covered", "decode"]
