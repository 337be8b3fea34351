"""Notify's persistence on the consuming side: findings whose deadlines we watch, notifications
recorded once (by dedupe key) and fanned out to the endpoints that want them, dead letters and
offsets, all in the caller's transaction."""

import uuid
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert, select, tuple_, update
from sqlmodel import Session

from services.kit.access.principal import region_prefix
from services.kit.upsert import upsert
from services.notify.base import Outbox
from services.notify.models import ConsumerOffset, Delivery, Endpoint, Message, TrackedFinding
from services.notify.notifications import Batch, Notification, overdue

WATCHED = ("open", "reported")  # the states in which a passed deadline makes a finding overdue


def covers(region: str, code: str) -> bool:
    """True if `code` lies inside `region` (a province, a prefecture or the county itself)."""
    return code.startswith(region_prefix(region))


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


def write(session: Session, batch: Batch, tz: ZoneInfo, now: datetime) -> int:
    """Apply one poll's worth of consumed messages; returns the deliveries created."""
    notifications = batch.notifications + track(session, batch, tz)
    created = record(session, notifications, now)
    if batch.dead_letters:
        session.execute(insert(Outbox.__table__), batch.dead_letters)
    if batch.offsets:
        upsert(session, ConsumerOffset.__table__, [{"topic": t, "partition": p, "next_offset": o,
                                                    "topic_id": batch.logs.get(t)}
                                                   for (t, p), o in sorted(batch.offsets.items())],
               keys=("topic", "partition"))
    return created


def track(session: Session, batch: Batch, tz: ZoneInfo) -> list[Notification]:
    """Remember new findings and apply state changes; a finding verified after its deadline passed
    was overdue even if no tick saw it (the worker was down): it is notified now. A finding is
    its county's: (region_code, finding_id), finding ids being unique within a county only."""
    keys = sorted({(f["region_code"], f["finding_id"]) for f in batch.findings}
                  | {(t.region_code, t.finding_id) for t in batch.transitions})
    if not keys:
        return []
    known = _tracked(session, keys)
    new = {}
    for f in batch.findings:
        key = (f["region_code"], f["finding_id"])
        if key not in known and key not in new:
            new[key] = f
    if new:
        session.execute(insert(TrackedFinding.__table__), list(new.values()))
        known.update(_tracked(session, sorted(new)))
    late: list[Notification] = []
    for t in batch.transitions:
        f = known.get((t.region_code, t.finding_id))
        if f is None:
            continue  # its inspection came before this database started reading
        if t.state == "verified" and f.state in WATCHED and not f.overdue_notified and t.on > f.deadline:
            f.overdue_notified = True
            late.append(overdue(_finding_dict(f), tz))
        f.state = t.state
    session.flush()
    return late


def _tracked(session: Session, keys: list[tuple[str, str]]) -> dict[tuple[str, str], TrackedFinding]:
    """The tracked findings of these (county, finding id) keys."""
    key = tuple_(TrackedFinding.region_code, TrackedFinding.finding_id)
    return {(f.region_code, f.finding_id): f for f in session.execute(
        select(TrackedFinding).where(key.in_(keys))).scalars()}


def _finding_dict(f: TrackedFinding) -> dict[str, Any]:
    return {"finding_id": f.finding_id, "region_code": f.region_code, "inspection_id": f.inspection_id,
            "severity": f.severity, "deadline": f.deadline, "state": f.state, "responsible_unit": f.responsible_unit}


def overdue_now(session: Session, today: date, tz: ZoneInfo, limit: int = 5000) -> list[Notification]:
    """Findings whose deadline lies before `today` and are still open or reported: each once."""
    rows = session.execute(select(TrackedFinding).where(
        TrackedFinding.overdue_notified.is_(False), TrackedFinding.deadline < today,
        TrackedFinding.state.in_(WATCHED)).order_by(TrackedFinding.deadline).limit(limit)).scalars().all()
    if rows:
        key = tuple_(TrackedFinding.region_code, TrackedFinding.finding_id)
        session.execute(update(TrackedFinding).where(key.in_([(r.region_code, r.finding_id) for r in rows]))
                        .values(overdue_notified=True))
    return [overdue(_finding_dict(r), tz) for r in rows]


def record(session: Session, notifications: list[Notification], now: datetime) -> int:
    """Store each notification once (a known dedupe key is skipped, or its legacy key stored for
    the same region) with one pending delivery per enabled endpoint whose region covers it and
    whose filter includes its type."""
    fresh: dict[str, Notification] = {}
    for n in notifications:
        fresh.setdefault(n.dedupe_key or new_message_id(), n)
    keys = [k for k, n in fresh.items() if n.dedupe_key]
    if keys:
        # a legacy key (type:finding_id) is another county's finding unless stored for this county
        legacy: dict[str, list[str]] = {}
        for k in keys:
            if (old := fresh[k].legacy_key) is not None:
                legacy.setdefault(old, []).append(k)
        stored = session.execute(select(Message.dedupe_key, Message.region_code)
                                 .where(Message.dedupe_key.in_(keys + sorted(legacy)))).all()
        seen = {key for key, _ in stored}
        seen |= {k for old, region in stored for k in legacy.get(old, ()) if fresh[k].region_code == region}
        fresh = {k: n for k, n in fresh.items() if k not in seen}
    if not fresh:
        return 0
    endpoints = session.execute(select(Endpoint.id, Endpoint.region_code, Endpoint.event_types)
                                .where(Endpoint.disabled_at.is_(None))).all()
    messages, deliveries = [], []
    for n in fresh.values():
        message_id = new_message_id()
        messages.append({"id": message_id, "type": n.type, "region_code": n.region_code,
                         "dedupe_key": n.dedupe_key, "body": n.body().decode(), "created_at": now})
        deliveries += [_pending(message_id, e.id, now) for e in endpoints
                       if covers(e.region_code, n.region_code) and n.type in e.event_types.split()]
    session.execute(insert(Message.__table__), messages)
    if deliveries:
        session.execute(insert(Delivery.__table__), deliveries)
    return len(deliveries)


def _pending(message_id: str, endpoint_id: str, now: datetime) -> dict[str, Any]:
    return {"message_id": message_id, "endpoint_id": endpoint_id, "status": "pending", "tries": 0,
            "next_attempt_at": now, "created_at": now}


def record_for(session: Session, notification: Notification, endpoint_id: str, now: datetime) -> str:
    """A message for one endpoint only (a ping); returns its id."""
    message_id = new_message_id()
    session.execute(insert(Message.__table__), [{
        "id": message_id, "type": notification.type, "region_code": notification.region_code, "dedupe_key": None,
        "body": notification.body().decode(), "created_at": now}])
    session.execute(insert(Delivery.__table__), [_pending(message_id, endpoint_id, now)])
    return message_id


def stored_offsets(session: Session) -> dict[tuple[str, int], tuple[int, str | None]]:
    """(topic, partition) → (next offset, topic id of the log it was read in)."""
    rows = session.execute(select(ConsumerOffset.topic, ConsumerOffset.partition, ConsumerOffset.next_offset,
                                  ConsumerOffset.topic_id)).all()
    return {(r.topic, r.partition): (r.next_offset, r.topic_id) for r in rows}
