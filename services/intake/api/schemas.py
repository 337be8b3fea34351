"""Response and request schemas of intake's HTTP API."""

from datetime import date, datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field

from services.events.vocabulary import CountyStatus, RegionLevel

Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class RecordPublic(BaseModel):
    """A stored event: the envelope as sent, plus `recorded_at` and `sequence` added by intake.

    Byte for byte the same record as the export line and the Kafka message value.
    """

    event_id: UUID
    type: str
    schema_version: int
    occurred_at: Timestamp
    region_code: str
    source: str
    payload: dict[str, Any]
    recorded_at: Timestamp = Field(description="When intake accepted it (UTC).")
    sequence: int = Field(description="Position in the store: gap-free, in acceptance order.")


class EventPage(BaseModel):
    items: list[RecordPublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null at the end.")


class BatchIn(BaseModel):
    events: list[Any] = Field(
        min_length=1, max_length=1000,
        description="Up to 1,000 events, each in the same shape as POST /v1/events. Each is accepted or "
        "rejected on its own, in order, so an item may build on an earlier one.")


class FieldError(BaseModel):
    field: str
    pointer: str
    message: str
    type: str


class ItemProblem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None
    model_config = {"extra": "allow"}


class BatchItemResult(BaseModel):
    index: int
    event_id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    sequence: int | None = None
    problem: ItemProblem | None = None


class BatchOut(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[BatchItemResult]


class RegionPublic(BaseModel):
    code: str
    name: str
    level: RegionLevel
    parent_code: str | None
    status: CountyStatus | None = None
    exit_year: int | None = None
    poverty_county: bool | None = None
    status_basis: str | None = Field(None, description="'source' (real), 'demo' (demo data), or 'event'.")
    baseline_status: CountyStatus | None = Field(None, description="The status before any event changed it.")
    baseline_exit_year: int | None = None


class RegionDetail(RegionPublic):
    parent: RegionPublic | None
    children: list[RegionPublic]


class FindingPublic(BaseModel):
    finding_id: str
    region_code: str
    prefecture_code: str
    inspection_id: str
    team_id: str
    mode: str
    category: str
    indicator: str
    severity: str
    description: str
    village_id: str | None
    household_id: str | None
    responsible_unit: str
    responsible_person: str
    deadline: date
    state: str
    overdue: bool = Field(description="Open or reported and past the deadline (in the province's time zone).")
    days_overdue: int
    found_at: datetime
    state_changed_at: datetime
    resolved_at: datetime | None
    reports: int
    rejections: int


class TransitionPublic(BaseModel):
    sequence: int
    event_type: str
    from_state: str | None
    to_state: str
    occurred_at: datetime


class FindingDetail(FindingPublic):
    history: list[TransitionPublic]


class FindingPage(BaseModel):
    items: list[FindingPublic]
    next_cursor: str | None


class BrokenLink(BaseModel):
    sequence: int
    event_id: str | None
    reason: str


class VerificationPublic(BaseModel):
    ok: bool
    events_checked: int
    head_sequence: int
    head_hash: str
    first_broken: BrokenLink | None
