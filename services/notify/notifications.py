"""What notify tells prefectures, built from the three topics it reads. Pure: no SQL, no I/O.

One handler per topic (and per intake event type) turns a consumed message into notifications
and finding-deadline updates; each notification carries a dedupe key made of its type and the
source's ids, so a redelivered source message never makes a second notification.

Finding ids are unique within a county only (two counties may each have an F-0001): a finding's
notifications are keyed `type:county/finding_id`. Those stored before that rule were keyed
`type:finding_id` (ids were then unique everywhere); such a key, with the same county, still
names the same finding (`legacy_key`), so re-reading old events makes no second message. The
`/` cannot occur in a finding id, so no new key is ever an old one.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from pydantic import ValidationError

from services.events import registry, topics, v1

CRITICAL = "finding.critical_recorded"
OVERDUE = "rectification.overdue"
STANDING = "standing.changed"
THRESHOLD = "score.threshold_crossed"
PING = "webhook.ping"
TYPES: dict[str, str] = {
    CRITICAL: "An inspection recorded a critical finding in a county of the region.",
    OVERDUE: "A rectification deadline passed with the finding still open or reported (once per finding).",
    STANDING: "A county or prefecture of the region moved rank in one of its standings.",
    THRESHOLD: "A county's or prefecture's score crossed into another grade band.",
    PING: "A test message sent by POST /v1/webhooks/endpoints/{id}/ping (always delivered).",
}
SUBSCRIBABLE = tuple(t for t in TYPES if t != PING)
DESCRIPTION_CHARS = 280  # a preview: the receiver fetches the rest from intake's API


@dataclass(frozen=True, slots=True)
class Notification:
    type: str
    region_code: str
    dedupe_key: str | None
    timestamp: datetime
    data: dict[str, Any]
    legacy_key: str | None = None  # the dedupe key it had before finding ids were per county

    def body(self) -> bytes:
        """The webhook body: fixed once, sent as the same bytes on every attempt."""
        return orjson.dumps({"type": self.type, "timestamp": registry.iso_utc(self.timestamp), "data": self.data})


@dataclass(frozen=True, slots=True)
class Transition:
    """A finding's new rectification state, from an intake event."""

    region_code: str  # the county: finding ids are unique within a county only
    finding_id: str
    state: str
    on: date  # the local day it happened


@dataclass
class Batch:
    notifications: list[Notification] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)  # new findings whose deadlines we watch
    transitions: list[Transition] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)  # topic → id of the log the offsets are in
    outbox_id: str | None = None  # the producer's `outbox_id` header of the message being handled


def _json_object(value: bytes | None) -> dict[str, Any]:
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("a message is a JSON object")
    return data


def _code(data: dict[str, Any], name: str = "region_code") -> str:
    code = data.get(name)
    if not (isinstance(code, str) and len(code) == 6 and code.isdigit()):
        raise ValueError(f"{name} {code!r} is not a 6-digit code")
    return code


def _moment(value: Any, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from exc
    if moment.tzinfo is None:
        raise ValueError(f"{name} has no UTC offset")
    return moment


# ---- intake events ---------------------------------------------------------------------------


def _inspection(event: v1.InspectionRecorded, batch: Batch, tz: ZoneInfo) -> None:
    p = event.payload
    for f in p.findings:
        batch.findings.append({"finding_id": f.finding_id, "region_code": event.region_code,
                               "inspection_id": p.inspection_id, "severity": f.severity.value,
                               "deadline": f.deadline, "state": "open", "responsible_unit": f.responsible_unit,
                               "overdue_notified": False})
        if f.severity.value != "critical":
            continue
        batch.notifications.append(Notification(CRITICAL, event.region_code, finding_key(CRITICAL, event.region_code,
                                                                                          f.finding_id),
                                                event.occurred_at, {
            "finding_id": f.finding_id, "inspection_id": p.inspection_id, "event_id": str(event.event_id),
            "region_code": event.region_code, "severity": "critical", "category": f.category.value,
            "indicator": f.indicator.value, "mode": p.mode.value, "village_id": f.village_id,
            "household_id": f.household_id, "responsible_unit": f.responsible_unit,
            "deadline": f.deadline.isoformat(), "description": f.description[:DESCRIPTION_CHARS],
            "occurred_at": registry.iso_utc(event.occurred_at)}, f"{CRITICAL}:{f.finding_id}"))


def finding_key(type_: str, region_code: str, finding_id: str) -> str:
    """The dedupe key of a finding's notification: its county and id (ids are unique per county;
    `/` is in no id, so this is never the key a finding had before, `type:finding_id`)."""
    return f"{type_}:{region_code}/{finding_id}"


def _transition(state: str) -> Callable[[Any, Batch, ZoneInfo], None]:
    def handle(event: Any, batch: Batch, tz: ZoneInfo) -> None:
        batch.transitions.append(Transition(event.region_code, event.payload.finding_id, state,
                                            event.occurred_at.astimezone(tz).date()))

    return handle


INTAKE_HANDLERS: dict[str, Callable[[Any, Batch, ZoneInfo], None]] = {
    "inspection.recorded": _inspection,
    "rectification.reported": _transition("reported"),
    "rectification.verified": _transition("verified"),
    "rectification.rejected": _transition("open"),
    "finding.disputed": _transition("disputed"),
    "finding.upheld": _transition("open"),
    "finding.withdrawn": _transition("withdrawn"),
}


# The (type, version) tags of the events notify makes nothing of (daily checks, absences, …)
IGNORED = frozenset(registry.tag_of(t, v) for t, v in registry.MODELS if t not in INTAKE_HANDLERS)


def _ignored(data: Any) -> bool:
    """A known event notify makes nothing of: not parsed (a fifth of the worker's CPU an event).
    Bad JSON, an unknown type or version is still dead-lettered here; a bad payload of such an
    event only by scoring, which reads it."""
    type_, version = data.get("type"), data.get("schema_version")
    return isinstance(type_, str) and isinstance(version, int) and registry.tag_of(type_, version) in IGNORED


def _intake(value: bytes | None, batch: Batch, tz: ZoneInfo) -> None:
    try:
        data = orjson.loads(value or b"")
        if not isinstance(data, dict):
            raise ValueError("not an intake event: the record is not a JSON object")
        if _ignored(data):
            return
        record = registry.decode_record(data)
    except (ValidationError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not an intake event: {str(exc).splitlines()[0]}") from exc
    handler = INTAKE_HANDLERS.get(record.event.type)
    if handler is not None:
        handler(record.event, batch, tz)


def overdue(finding: dict[str, Any], tz: ZoneInfo) -> Notification:
    """A finding whose deadline passed: overdue from the start of the next local day."""
    since = datetime.combine(finding["deadline"] + timedelta(days=1), time(), tz)
    key = finding_key(OVERDUE, finding["region_code"], finding["finding_id"])
    return Notification(OVERDUE, finding["region_code"], key, since, {
        "finding_id": finding["finding_id"], "inspection_id": finding["inspection_id"],
        "region_code": finding["region_code"], "severity": finding["severity"], "state": finding["state"],
        "deadline": finding["deadline"].isoformat(), "responsible_unit": finding["responsible_unit"],
        "overdue_since": registry.iso_utc(since)}, f"{OVERDUE}:{finding['finding_id']}")


# ---- scores and standings --------------------------------------------------------------------


def _score(value: bytes | None, batch: Batch, tz: ZoneInfo) -> None:
    """A grade band changed: scoring sends `previous_grade` with every score message."""
    data = _json_object(value)
    code, grade, previous = _code(data), data.get("grade"), data.get("previous_grade")
    year, total = data.get("year"), data.get("total")
    if not isinstance(grade, str) or not (previous is None or isinstance(previous, str)):
        raise ValueError("grade must be a string and previous_grade a string or null")
    if not isinstance(year, int) or not isinstance(total, (int, float)):
        raise ValueError("year must be an integer and total a number")
    as_of = _moment(data.get("as_of"), "as_of")
    if previous is None or previous == grade:
        return  # a first score crosses nothing
    prev_total = data.get("previous_total")
    direction = data.get("direction")  # by the policy's order of grades: a gate can lift the grade as the total falls
    if direction not in ("up", "down"):  # a message from before scoring sent it
        direction = "up" if isinstance(prev_total, (int, float)) and total > prev_total else "down"
    # one notification per score message (a resend has the same outbox_id): the same crossing again
    # at the same as_of (the scoring clock moves with ticks, not messages) is a new crossing
    origin = batch.outbox_id or ""
    batch.notifications.append(Notification(
        THRESHOLD, code, f"{THRESHOLD}:{code}:{year}:{registry.iso_utc(as_of)}:{previous}>{grade}:{origin}", as_of, {
            "region_code": code, "level": data.get("level"), "league": data.get("league"), "year": year,
            "grade": grade, "previous_grade": previous, "direction": direction, "total": total,
            "previous_total": prev_total, "cause": data.get("cause"), "policy_version": data.get("policy_version"),
            "as_of": registry.iso_utc(as_of)}))


def _standing(value: bytes | None, batch: Batch, tz: ZoneInfo) -> None:
    """A rank moved; a region entering or leaving a league (no rank on one side) is no move."""
    data = _json_object(value)
    code, scope = _code(data), _code(data, "scope")
    rank, previous, year = data.get("rank"), data.get("previous_rank"), data.get("year")
    if not all(isinstance(x, int) or x is None for x in (rank, previous)) or not isinstance(year, int):
        raise ValueError("rank and previous_rank must be integers or null, year an integer")
    changed_at = _moment(data.get("changed_at"), "changed_at")
    if rank is None or previous is None or rank == previous:
        return
    league, level = data.get("league"), data.get("level")
    batch.notifications.append(Notification(
        STANDING, code, f"{STANDING}:{code}:{scope}:{level}:{league}:{year}:{registry.iso_utc(changed_at)}",
        changed_at, {"region_code": code, "scope": scope, "level": level, "league": league, "year": year,
                     "rank": rank, "previous_rank": previous, "movement": previous - rank,
                     "total": data.get("total"), "previous_total": data.get("previous_total"),
                     "grade": data.get("grade"), "changed_at": registry.iso_utc(changed_at)}))


TOPIC_HANDLERS: dict[str, Callable[[bytes | None, Batch, ZoneInfo], None]] = {
    topics.INTAKE_EVENTS: _intake,
    topics.SCORING_SCORES: _score,
    topics.RANKING_STANDINGS: _standing,
}
TOPICS = tuple(TOPIC_HANDLERS)


def ping(endpoint_id: str, region_code: str, now: datetime) -> Notification:
    return Notification(PING, region_code, None, now, {"endpoint_id": endpoint_id, "region_code": region_code,
                                                       "message": "ping from Kaohe"})
