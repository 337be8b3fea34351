"""What scoring reads of a published record: the fields the engine uses, validated in one pass.

Intake validated every event against its full contract (services/events/v1.py) before storing and
publishing it. Parsing that contract again costs the worker more than everything else it does per
event (custom validators, every text field), so the worker reads records through this view:
structures of only the fields the engine uses, with the constraints the engine relies on
(enumerations, ranges, aware times; numbers and flags strict, as in the contract), decoded straight
from the bytes. Anything else in a record is ignored.

The view is msgspec's, not pydantic's: the same checks, declared the same way, decoded in about
half the time, into structures that cost less to make and to free (docs/performance.md, the
scoring worker's profile: pydantic's parse was the largest single piece of the worker's CPU).
Two checks are made after the decode (`decode`): the range of `occurred_at`, which msgspec cannot
declare, and the region code's digits, which it can (a pattern) but through Python's `re` at about
half a microsecond a record; checked with two string methods instead, a bench record decodes in
1.70 µs, not 2.15. (The contract's pattern is ASCII digits, `[0-9]`; the view's pattern was `\\d`,
which also takes other scripts' digits.)

What this view rejects still goes to the dead-letter topic: bad JSON, an unknown type or
schema_version, a missing or mistyped field the engine needs. A record this view accepts but the
full contract would not (say, a description too long) can only come from outside intake; it is
scored like any other. tests/scoring/test_view.py keeps the view covering every (type, version)
of the registry and reading every record exactly as the full contract does.
"""

from datetime import date, datetime, timezone
from typing import Annotated, ClassVar, Literal, Union
from uuid import UUID

import msgspec
from msgspec import Meta, Struct

from services.events.vocabulary import CountyStatus, DailyCheckKind, FindingCategory, Indicator, Severity

RegionCode = Annotated[str, Meta(min_length=6, max_length=6)]  # and its digits: `decode` (as the contract's pattern)
Identifier = Annotated[str, Meta(min_length=1, max_length=64)]
Aware = Annotated[datetime, Meta(tz=True)]
EARLIEST, LATEST = datetime(2010, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc)


class View(Struct, frozen=True):
    pass


class Finding(View):
    finding_id: Identifier
    category: FindingCategory
    indicator: Indicator
    severity: Severity
    deadline: date


class Inspection(View):
    team_id: Identifier
    villages_sampled: Annotated[int, Meta(ge=0, le=10_000)]  # with the policy's households_per_village
    households_sampled: Annotated[int, Meta(ge=0, le=1_000_000)]
    findings: Annotated[list[Finding], Meta(max_length=500)] = []


class FindingStep(View):
    finding_id: Identifier


class DailyCheck(View):
    kind: DailyCheckKind
    items_failed: Annotated[int, Meta(ge=0, le=1_000_000)]


class YearEnd(View):
    year: Annotated[int, Meta(ge=2010, le=2100)]
    score: Annotated[float, Meta(ge=0, le=100)]  # JSON has no inf or NaN; an int is a float, as in strict pydantic


class Status(View):
    status: CountyStatus


class ReturnRisk(View):
    household_id: Identifier


class Absence(View):
    team_id: Identifier
    inspector_id: Identifier
    approved: bool


class Record(View, tag_field="type"):
    """The envelope and intake's additions (sequence, recorded_at). Each event type is a subclass
    tagged with it (the tag picks the class while decoding); `type` is the tag, as a class value.

    A record is read where the engine reads a `registry.Recorded` (sequence, recorded_at, event):
    its `event` is itself, so no wrapper is made and freed for each one."""

    type: ClassVar[str]
    event_id: UUID
    schema_version: Literal[1]
    occurred_at: Aware
    region_code: RegionCode
    sequence: Annotated[int, Meta(ge=0)]
    recorded_at: Aware

    @property
    def event(self) -> "Record":
        return self


def _records(types: tuple[str, ...], payload: type) -> list[type[Record]]:
    """One tagged subclass of `Record` per type in `types`, all with `payload`."""
    return [msgspec.defstruct(f"Record_{t.replace('.', '_')}", [("payload", payload)], bases=(Record,), tag=t,
                              namespace={"type": t}, frozen=True)
            for t in types]


RECORDS: tuple[type[Record], ...] = tuple(
    _records(("inspection.recorded",), Inspection)
    + _records(("rectification.reported", "rectification.verified", "rectification.rejected", "finding.disputed",
                "finding.upheld", "finding.withdrawn"), FindingStep)
    + _records(("daily_check.recorded",), DailyCheck)
    + _records(("year_end_assessment.recorded",), YearEnd)
    + _records(("county.status_changed",), Status)
    + _records(("return_risk.flagged", "return_risk.cleared"), ReturnRisk)
    + _records(("inspector.absence_recorded",), Absence))
DECODER = msgspec.json.Decoder(Union[RECORDS])  # type: ignore[valid-type]


def decode(raw: bytes | str) -> Record:
    """A published record (Kafka value or export line) as the engine reads it (as a
    `registry.Recorded`); raises a ValueError (msgspec's DecodeError, or the range check's) for
    anything the view cannot read."""
    record = DECODER.decode(raw)
    if not EARLIEST <= record.occurred_at < LATEST:
        raise ValueError(f"occurred_at {record.occurred_at.isoformat()} is not in [2010, 2100)")
    code = record.region_code
    if not (code.isascii() and code.isdigit()) or code[0] == "0":
        raise ValueError(f"region_code {code!r} is not six digits, the first not 0")
    return record


def id_text(uid: UUID) -> str:
    """`str(uid)`, the same text (lowercase, hyphenated), made in C: `UUID.__str__` formats in
    Python, about 0.7 µs an event id against 0.2 (measured: a few per cent of the worker's CPU)."""
    return msgspec.to_builtins(uid)


def covered() -> set[tuple[str, int]]:
    """Every (type, schema_version) this view reads."""
    return {(m.type, 1) for m in RECORDS}


__all__ = ["DECODER", "RECORDS", "covered", "decode", "id_text"]
