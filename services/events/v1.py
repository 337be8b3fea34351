"""Event contracts, schema version 1: the envelope and one typed payload per event type.

Within version 1 changes are additive only (new optional fields). A breaking change is a
new module `v2.py` plus an upcaster in `registry.py`.

Numbers and flags are strict: `true` is no count and `1` no flag (JSON has both), nor is `"10"` a
count. Some rules judge a *new* event only, when intake accepts it (`Accepting`, passed as the
validation context): its time against intake's clock, the bounds of a finding's deadline, and the
sampling of an inspection. A record already stored is read again without them, so a rule made
stricter never turns an event intake accepted into a dead letter.
"""

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from services.events.errors import errors_at
from services.events.vocabulary import (
    HOUSEHOLD_INDICATORS,
    VILLAGE_INDICATORS,
    CountyStatus,
    DailyCheckKind,
    FindingCategory,
    Indicator,
    InspectionMode,
    Severity,
)

REGION_CODE = r"[1-9][0-9]{5}"  # a division code: six ASCII digits, not starting with 0
RegionCode = Annotated[str, StringConstraints(pattern=f"^{REGION_CODE}$")]
IDENTIFIER = r"^[A-Za-z0-9][A-Za-z0-9._:\-]*$"  # a partner's id (finding, team, ...), 1 to 64 characters
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=IDENTIFIER)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
LongText = Annotated[str, StringConstraints(max_length=4000)]
Evidence = Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=2000)]], Field(max_length=50)]


def _written_as(pattern: str, example: str) -> BeforeValidator:
    """Times and days as ISO 8601 text only: pydantic would also read a number as a Unix time,
    which the contract does not offer (and a partner's bug would land silently in 1970 or 2025)."""
    shape = re.compile(pattern)

    def check(value: Any) -> Any:
        if isinstance(value, date) or (isinstance(value, str) and shape.match(value)):
            return value
        raise ValueError(f"ISO 8601 text, e.g. {example}")

    return BeforeValidator(check)


# also the APIs' time parameters (kit.types.IsoDateTime)
MOMENT_TEXT = _written_as(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}", "2026-03-02T09:30:00+08:00")
Moment = Annotated[AwareDatetime, MOMENT_TEXT]
Day = Annotated[date, _written_as(r"^\d{4}-\d{2}-\d{2}$", "2026-06-30")]

EARLIEST = datetime(2010, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)
EARLIEST_DEADLINE, LATEST_DEADLINE = EARLIEST.date(), LATEST.date()  # [2010-01-01, 2100-01-01), as the times


@dataclass(frozen=True, slots=True)
class Accepting:
    """The validation context of a new event at intake: its clock, how far ahead of it an
    `occurred_at` may be (a field device's clock may run a little fast), and the province's time
    zone, in which a visit's day is compared with its findings' deadlines (calendar days there)."""

    now: datetime
    max_future: timedelta
    zone: tzinfo

    def context(self) -> dict[str, Any]:
        return {"accepting": self}


def accepting(info: ValidationInfo) -> Accepting | None:
    """The intake's context, when a new event is being accepted (None when a record is read)."""
    return info.context.get("accepting") if isinstance(info.context, dict) else None


def future_error(occurred_at: datetime, now: datetime, max_future: timedelta) -> str | None:
    if occurred_at - now <= max_future:
        return None
    return (f"{occurred_at.isoformat()} is in the future (more than {int(max_future.total_seconds())} s after "
            f"intake's clock, {now.isoformat()})")


class Contract(BaseModel):
    """Strict: an unknown or misspelt field is an error the partner gets to see."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---- payloads ---------------------------------------------------------------------------


class Finding(Contract):
    finding_id: Identifier
    category: FindingCategory
    indicator: Indicator
    severity: Severity
    description: Annotated[str, StringConstraints(min_length=1, max_length=4000)]
    village_id: Identifier | None = None
    household_id: Identifier | None = None
    responsible_unit: ShortText
    responsible_person: ShortText
    deadline: Day = Field(description="The day the rectification is due (in the province's time zone): not "
                           "before the inspection day, and (for a new event) between 2010-01-01 and 2099-12-31.")

    @field_validator("deadline")
    @classmethod
    def _bounded(cls, deadline: date, info: ValidationInfo) -> date:
        if accepting(info) and not (EARLIEST_DEADLINE <= deadline < LATEST_DEADLINE):
            raise ValueError("a deadline must lie between 2010-01-01 and 2099-12-31")
        return deadline


class InspectionRecordedPayload(Contract):
    """What a visit sampled and found. Households are sampled within villages, so (for a new event)
    no households without a village, at least one household per sampled village, and a finding about
    a household (a household indicator or `household_id`) or a village (a village indicator or
    `village_id`) needs one sampled; a finding about the records (`registry_accuracy`) needs neither."""

    inspection_id: Identifier
    mode: InspectionMode
    team_id: Identifier
    villages_sampled: Annotated[StrictInt, Field(ge=0, le=10_000)]
    households_sampled: Annotated[StrictInt, Field(ge=0, le=1_000_000)]
    findings: Annotated[list[Finding], Field(max_length=500)] = []

    @field_validator("findings")
    @classmethod
    def _unique_finding_ids(cls, findings: list[Finding]) -> list[Finding]:
        seen: set[str] = set()
        for f in findings:
            if f.finding_id in seen:
                raise ValueError(f"finding_id {f.finding_id!r} appears twice in this inspection")
            seen.add(f.finding_id)
        return findings

    @model_validator(mode="after")
    def _sampling(self, info: ValidationInfo) -> "InspectionRecordedPayload":
        if not accepting(info):
            return self
        villages, households = self.villages_sampled, self.households_sampled
        errors = []
        about_households = [i for i, f in enumerate(self.findings)
                            if f.indicator in HOUSEHOLD_INDICATORS or f.household_id is not None]
        about_villages = [i for i, f in enumerate(self.findings) if f.indicator in VILLAGE_INDICATORS
                          or f.village_id is not None or i in about_households]
        if villages == 0 and households > 0:
            errors.append((("households_sampled",), "sampling", f"{households} households sampled in no village: "
                           "households are sampled within villages", households))
        elif households < villages:
            errors.append((("households_sampled",), "sampling", f"{households} households sampled in {villages} "
                           "villages: at least one household is sampled in each village", households))
        elif households == 0 and about_households:
            errors.append((("households_sampled",), "sampling", "no household sampled, but findings "
                           f"{', '.join(f'[{i}]' for i in about_households)} are about households", households))
        if villages == 0 and about_villages:
            errors.append((("villages_sampled",), "sampling", "no village sampled, but findings "
                           f"{', '.join(f'[{i}]' for i in about_villages)} are about a village or its households",
                           villages))
        if errors:
            raise errors_at("event", errors)
        return self


class RectificationReportedPayload(Contract):
    finding_id: Identifier
    evidence: Annotated[Evidence, Field(min_length=1)]
    note: LongText = ""


class AcceptanceCheckPayload(Contract):
    finding_id: Identifier
    checked_by: ShortText
    note: LongText = ""


class FindingDisputedPayload(Contract):
    finding_id: Identifier
    evidence: Annotated[Evidence, Field(min_length=1)]


class DisputeDecidedPayload(Contract):
    finding_id: Identifier
    decided_by: ShortText


class DailyCheckRecordedPayload(Contract):
    check_id: Identifier
    kind: DailyCheckKind
    items_checked: Annotated[StrictInt, Field(ge=1, le=1_000_000)]
    items_failed: Annotated[StrictInt, Field(ge=0, le=1_000_000)]
    note: LongText = ""

    @field_validator("items_failed")
    @classmethod
    def _failed_within_checked(cls, failed: int, info: ValidationInfo) -> int:
        checked = info.data.get("items_checked")
        if checked is not None and failed > checked:
            raise ValueError(f"items_failed ({failed}) cannot exceed items_checked ({checked})")
        return failed


class YearEndAssessmentRecordedPayload(Contract):
    year: Annotated[StrictInt, Field(ge=2010, le=2100)]
    score: Annotated[StrictFloat, Field(ge=0, le=100, allow_inf_nan=False)]


class CountyStatusChangedPayload(Contract):
    status: CountyStatus
    exit_year: Annotated[StrictInt | None, Field(ge=2010, le=2100, validate_default=True)] = None

    @field_validator("exit_year")
    @classmethod
    def _exit_year_matches_status(cls, exit_year: int | None, info: ValidationInfo) -> int | None:
        status = info.data.get("status")
        if status is CountyStatus.exited and exit_year is None:
            raise ValueError("exit_year is required when status is 'exited'")
        if status is CountyStatus.in_poverty and exit_year is not None:
            raise ValueError("exit_year must be null when status is 'in_poverty'")
        return exit_year


class ReturnRiskPayload(Contract):
    household_id: Identifier
    reasons: Annotated[list[ShortText], Field(max_length=20)] = []


class InspectorAbsenceRecordedPayload(Contract):
    team_id: Identifier
    inspector_id: Identifier
    approved: StrictBool


# ---- envelopes --------------------------------------------------------------------------


class Envelope(Contract):
    """What every event carries; `recorded_at` and `sequence` are added by intake."""

    event_id: UUID = Field(description="Chosen by the client; the same id twice is one event.")
    schema_version: Literal[1] = 1
    occurred_at: Moment = Field(description="When it happened in the field, with its UTC offset.")
    region_code: RegionCode = Field(description="The county (GB/T 2260 code) the event is about.")
    source: Annotated[str, StringConstraints(min_length=1, max_length=100)] = Field(
        description="Which partner or app sent it."
    )

    @field_validator("occurred_at")
    @classmethod
    def _plausible_time(cls, occurred_at: datetime, info: ValidationInfo) -> datetime:
        if not (EARLIEST <= occurred_at < LATEST):
            raise ValueError("occurred_at must lie between 2010-01-01 and 2100-01-01")
        # with the other fields, so that every fault is named at once (an invalid time leaves
        # out the checks that compare with it: a deadline "before" a visit in 2099 is not the fault)
        if (intake := accepting(info)) and (error := future_error(occurred_at, intake.now, intake.max_future)):
            raise ValueError(error)
        return occurred_at


class InspectionRecorded(Envelope):
    """督查/暗访: a visit and what it found. No findings is a clean visit, and it counts."""

    type: Literal["inspection.recorded"] = "inspection.recorded"
    payload: InspectionRecordedPayload

    @field_validator("payload")
    @classmethod
    def _deadlines_after_visit(cls, payload: InspectionRecordedPayload, info: ValidationInfo):
        occurred_at = info.data.get("occurred_at")
        if occurred_at is None:
            return payload
        # a new event: the visit's day in the province (2026-03-01T17:00Z is 03-02 in Beijing); a
        # stored record keeps the day of the offset it was sent with, the rule it was accepted under
        visit_day = occurred_at.astimezone(intake.zone).date() if (intake := accepting(info)) else occurred_at.date()
        late = [(("findings", i, "deadline"), "deadline_before_visit",
                 f"{f.deadline} ({f.finding_id}) is before the inspection day {visit_day}", f.deadline.isoformat())
                for i, f in enumerate(payload.findings) if f.deadline < visit_day]
        if late:
            raise errors_at("event", late)
        return payload


class RectificationReported(Envelope):
    """The county reports a finding fixed, with evidence."""

    type: Literal["rectification.reported"] = "rectification.reported"
    payload: RectificationReportedPayload


class RectificationVerified(Envelope):
    """验收 passed: the fix is accepted."""

    type: Literal["rectification.verified"] = "rectification.verified"
    payload: AcceptanceCheckPayload


class RectificationRejected(Envelope):
    """验收 failed: the finding is open again and the failed fix counts."""

    type: Literal["rectification.rejected"] = "rectification.rejected"
    payload: AcceptanceCheckPayload


class FindingDisputed(Envelope):
    """举证: the village refutes a finding with evidence."""

    type: Literal["finding.disputed"] = "finding.disputed"
    payload: FindingDisputedPayload


class FindingUpheld(Envelope):
    """The dispute failed: the finding stays open."""

    type: Literal["finding.upheld"] = "finding.upheld"
    payload: DisputeDecidedPayload


class FindingWithdrawn(Envelope):
    """The dispute succeeded: the finding is removed and deducts nothing."""

    type: Literal["finding.withdrawn"] = "finding.withdrawn"
    payload: DisputeDecidedPayload


class DailyCheckRecorded(Envelope):
    """精细化管理: a routine check of the county's records and work."""

    type: Literal["daily_check.recorded"] = "daily_check.recorded"
    payload: DailyCheckRecordedPayload


class YearEndAssessmentRecorded(Envelope):
    """年底考核: the annual result, one input among four."""

    type: Literal["year_end_assessment.recorded"] = "year_end_assessment.recorded"
    payload: YearEndAssessmentRecordedPayload


class CountyStatusChanged(Envelope):
    """摘帽: a county exits poverty (or, rarely, the status is corrected back)."""

    type: Literal["county.status_changed"] = "county.status_changed"
    payload: CountyStatusChangedPayload


class ReturnRiskFlagged(Envelope):
    """防返贫: a household is at risk of falling back into poverty."""

    type: Literal["return_risk.flagged"] = "return_risk.flagged"
    payload: ReturnRiskPayload


class ReturnRiskCleared(Envelope):
    """The household is no longer at risk."""

    type: Literal["return_risk.cleared"] = "return_risk.cleared"
    payload: ReturnRiskPayload


class InspectorAbsenceRecorded(Envelope):
    """积分制: an inspector missed a visit; unapproved absences cost points."""

    type: Literal["inspector.absence_recorded"] = "inspector.absence_recorded"
    payload: InspectorAbsenceRecordedPayload


MODELS: tuple[type[Envelope], ...] = (
    InspectionRecorded,
    RectificationReported,
    RectificationVerified,
    RectificationRejected,
    FindingDisputed,
    FindingUpheld,
    FindingWithdrawn,
    DailyCheckRecorded,
    YearEndAssessmentRecorded,
    CountyStatusChanged,
    ReturnRiskFlagged,
    ReturnRiskCleared,
    InspectorAbsenceRecorded,
)
