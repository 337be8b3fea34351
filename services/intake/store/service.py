"""Appending events: idempotency, the ledger's checks and the hash chain.

Functions here add and flush; the caller owns the transaction (the group committer, or a
test's session) and commits it.
"""

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal
from uuid import UUID

import orjson
from sqlalchemy import Engine, select, update
from sqlmodel import Session

from services.events import registry
from services.events.v1 import Envelope, future_error
from services.intake.findings.ledger import HANDLERS, Context, Lookups, conflict
from services.intake.regions.service import Directory
from services.intake.store.keyset import custom_plans, members
from services.intake.store.models import GENESIS_HASH, ChainHead, Published, StoredEvent
from services.kit.bulk import insert_rows
from services.kit.logs import REQUEST_ID, bound
from services.kit.problems import InvalidEvent, Problem, field_problem

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def content_hash(event_json: dict[str, Any]) -> str:
    return hashlib.sha256(registry.canonical_content(event_json)).hexdigest()


def chain_hash(previous: str, sequence: int, recorded_at: datetime, body: str) -> str:
    h = hashlib.sha256()
    h.update(f"{previous}\n{sequence}\n{recorded_at.astimezone(timezone.utc).isoformat()}\n".encode())
    h.update(body.encode())
    return h.hexdigest()


def record_of(row: StoredEvent) -> dict[str, Any]:
    """The stored event as partners and consumers see it: envelope + recorded_at + sequence."""
    return registry.record_dict(row.sequence, row.recorded_at, orjson.loads(row.body))


@dataclass(slots=True)
class Outcome:
    status: Literal["accepted", "duplicate", "rejected"]
    event_id: str | None = None
    record: dict[str, Any] | None = None
    problem: Problem | None = None


@dataclass(frozen=True, slots=True)
class _Known:
    """An event already in the store (or earlier in this batch), enough to judge a duplicate."""

    sequence: int
    content_hash: str
    record: dict[str, Any]


@dataclass(slots=True)
class _Batch:
    """Append state for one transaction: the locked head and what this batch added so far."""

    session: Session
    lookups: Lookups
    known: dict[UUID, _Known]
    sequence: int = 0  # the head as this batch moves it (written back to `head` on flush)
    chain_hash: str = GENESIS_HASH
    recorded_at: datetime | None = None
    recorded_iso: str = ""  # this batch's `now`, formatted once
    chained_iso: str = ""  # the same as the chain hash formats it
    events: list[dict[str, Any]] = field(default_factory=list)


_HEAD = ChainHead.__table__


def _lock_head(session: Session) -> tuple[int, str, datetime | None]:
    # The UPDATE comes first: it takes the row lock (PostgreSQL) or the write lock (SQLite)
    # before anything is read, so appends from every process are serialised, gap-free and chained.
    session.execute(update(_HEAD).where(_HEAD.c.id == 1).values(sequence=_HEAD.c.sequence))
    row = session.execute(select(_HEAD.c.sequence, _HEAD.c.chain_hash, _HEAD.c.recorded_at)
                          .where(_HEAD.c.id == 1)).one()
    return row.sequence, row.chain_hash, row.recorded_at


def _begin(session: Session, events: Sequence[Envelope]) -> _Batch:
    custom_plans(session)
    head_sequence, head_hash, head_recorded_at = _lock_head(session)
    known: dict[UUID, _Known] = {}
    for where in members(session, StoredEvent.event_id, [e.event_id for e in events]):
        rows = session.execute(
            select(StoredEvent.event_id, StoredEvent.sequence, StoredEvent.recorded_at, StoredEvent.content_hash,
                   StoredEvent.body).where(where))
        for row in rows:
            known[row.event_id] = _Known(row.sequence, row.content_hash,
                                         registry.record_dict(row.sequence, row.recorded_at, orjson.loads(row.body)))
    return _Batch(session, Lookups.load(session, events), known, head_sequence, head_hash, head_recorded_at)


def _check_time(event: Envelope, now: datetime, max_future: timedelta) -> None:
    """Again at append time (the routes judged it while parsing, with every other field): for
    events parsed without intake's context, and a clock that moved on meanwhile."""
    if error := future_error(event.occurred_at, now, max_future):
        raise field_problem("occurred_at", error)


def _append(batch: _Batch, event: Envelope, event_json: dict[str, Any], *, directory: Directory, now: datetime,
            max_future: timedelta, request_id: str | None) -> Outcome:
    eid = event_json["event_id"]  # = str(event.event_id)
    digest = content_hash(event_json)
    prior = batch.known.get(event.event_id)
    if prior is not None:
        if prior.content_hash == digest:
            return Outcome("duplicate", eid, prior.record)
        raise conflict(f"event_id {eid} was already used for different content (sequence "
                       f"{prior.sequence}); an event is a fact and cannot be changed — send a correction "
                       "as a new event with a new event_id", event_id=eid, sequence=prior.sequence)
    place = directory.county(event.region_code)
    prefecture_code = place.prefecture_code or ""
    _check_time(event, now, max_future)
    sequence = batch.sequence + 1
    apply = HANDLERS[event.type](event, Context(batch.lookups, sequence, prefecture_code))
    # nothing was written for this event before this line; everything below only writes
    apply()
    body = orjson.dumps(event_json, option=orjson.OPT_SORT_KEYS)
    # = chain_hash(batch.chain_hash, sequence, now, body), with `now` formatted once per batch
    link = hashlib.sha256(f"{batch.chain_hash}\n{sequence}\n{batch.chained_iso}\n".encode() + body).hexdigest()
    batch.events.append({
        "sequence": sequence, "event_id": event.event_id, "type": event.type,
        "schema_version": event.schema_version, "occurred_at": event.occurred_at, "recorded_at": now,
        "region_code": event.region_code, "prefecture_code": prefecture_code, "source": event.source,
        "body": body.decode(), "content_hash": digest, "chain_hash": link, "request_id": request_id,
    })
    batch.sequence, batch.chain_hash, batch.recorded_at = sequence, link, now
    record = registry.record_dict(sequence, batch.recorded_iso, event_json)
    batch.known[event.event_id] = _Known(sequence, digest, record)
    return Outcome("accepted", eid, record)


def _flush(batch: _Batch) -> None:
    if batch.events:
        insert_rows(batch.session, StoredEvent.__table__, batch.events)  # the relay publishes them from here
        batch.session.execute(update(_HEAD).where(_HEAD.c.id == 1).values(
            sequence=batch.sequence, chain_hash=batch.chain_hash, recorded_at=batch.recorded_at))
    batch.lookups.flush()
    batch.session.flush()


def parse_items(items: Sequence[Any], accepting: registry.Accepting) -> list[Envelope | InvalidEvent]:
    """Parse each raw item as a new event on its own; a bad one becomes its 422 naming every
    offending field, the others are unaffected."""
    parsed: list[Envelope | InvalidEvent] = []
    for item in items:
        try:
            parsed.append(registry.parse(item, accepting))
        except registry.ValidationError as exc:
            parsed.append(InvalidEvent.from_validation(exc, item))
    return parsed


def append_many(*, session: Session, items: Sequence[Envelope | InvalidEvent], directory: Directory,
                clock: Clock = utcnow, max_future: timedelta = timedelta(days=1),
                request_ids: Sequence[str | None] | None = None) -> list[Outcome]:
    """Store each event on its own merits, in order (an event may build on an earlier one).

    `request_ids[i]`: the request that sent item i (the group committer appends several requests'
    items together); logs, the stored event and its message carry it. Default: the current one.
    """
    outcomes = []
    with session.no_autoflush:
        batch = _begin(session, [e for e in items if isinstance(e, Envelope)])
        now = clock()
        batch.recorded_iso = registry.iso_utc(now)
        batch.chained_iso = now.astimezone(timezone.utc).isoformat()
        for i, event in enumerate(items):
            if isinstance(event, InvalidEvent):
                outcomes.append(Outcome("rejected", event.event_id, problem=event))
                continue
            request_id = REQUEST_ID.get() if request_ids is None else request_ids[i]
            event_json = registry.to_json_dict(event)
            eid = event_json["event_id"]  # = str(event.event_id), made once
            try:
                with bound(event_id=eid, request_id=request_id):
                    outcomes.append(_append(batch, event, event_json, directory=directory, now=now,
                                            max_future=max_future, request_id=request_id))
            except Problem as problem:
                outcomes.append(Outcome("rejected", eid, problem=problem))
        _flush(batch)
    return outcomes


def append(*, session: Session, event: Envelope, directory: Directory, clock: Clock = utcnow,
           max_future: timedelta = timedelta(days=1)) -> Outcome:
    """Store one event; raises Problem (422/409) if it cannot be accepted."""
    (outcome,) = append_many(session=session, items=[event], directory=directory, clock=clock,
                             max_future=max_future)
    if outcome.problem is not None:
        raise outcome.problem
    return outcome


# ---- reading --------------------------------------------------------------------------------


def get(*, session: Session, event_id: UUID) -> StoredEvent:
    row = session.execute(select(StoredEvent).where(StoredEvent.event_id == event_id)).scalar_one_or_none()
    if row is None:
        raise Problem(404, "not-found", "Not found", f"no event with event_id {event_id}")
    return row


def page(*, session: Session, where: list[Any], after_sequence: int, limit: int) -> list[StoredEvent]:
    q = select(StoredEvent).where(StoredEvent.sequence > after_sequence, *where)
    return list(session.execute(q.order_by(StoredEvent.sequence).limit(limit)).scalars())


def head(*, session: Session) -> ChainHead:
    return session.execute(select(ChainHead).where(ChainHead.id == 1)).scalar_one()


# the last sequence the relay marked published (services/intake/relay.py)
PUBLISHED_POSITION = select(Published.sequence).where(Published.id == 1)


def unpublished(*, session: Session) -> int:
    """How many stored events the relay has not yet marked published (services/intake/relay.py)."""
    stored = session.execute(select(ChainHead.sequence).where(ChainHead.id == 1)).scalar_one()
    return max(0, stored - session.execute(PUBLISHED_POSITION).scalar_one())


def export(engine: Engine, *, after_sequence: int, where: list[Any] | None = None,
           page_size: int = 2000) -> Iterator[bytes]:
    """NDJSON lines of the store in sequence order, up to the head at the time of the call.

    Each page is its own short transaction, so a long export never holds a lock or a snapshot.
    """
    with Session(engine) as s:
        upto = head(session=s).sequence
    cursor = after_sequence
    while cursor < upto:
        with Session(engine) as s:
            rows = s.execute(
                select(StoredEvent.sequence, StoredEvent.recorded_at, StoredEvent.body)
                .where(StoredEvent.sequence > cursor, StoredEvent.sequence <= upto, *(where or []))
                .order_by(StoredEvent.sequence).limit(page_size)
            ).all()
        if not rows:
            return
        yield b"".join(
            registry.encode_record(seq, recorded_at, orjson.loads(body)) + b"\n" for seq, recorded_at, body in rows
        )
        cursor = rows[-1].sequence


@dataclass(slots=True)
class Verification:
    ok: bool
    events_checked: int
    head_sequence: int
    head_hash: str
    first_broken: dict[str, Any] | None


def verify(engine: Engine, page_size: int = 5000) -> Verification:
    """Recompute the whole chain; report the first event whose stored hash does not follow."""
    with Session(engine) as s:
        h = head(session=s)
        upto, head_hash = h.sequence, h.chain_hash
    previous, expected_seq, checked = GENESIS_HASH, 1, 0
    while expected_seq <= upto:
        with Session(engine) as s:
            rows = s.execute(
                select(StoredEvent).where(StoredEvent.sequence >= expected_seq, StoredEvent.sequence <= upto)
                .order_by(StoredEvent.sequence).limit(page_size)
            ).scalars().all()
        if not rows:
            break
        for row in rows:
            problem = _check_row(row, expected_seq, previous)
            if problem:
                return Verification(False, checked, upto, head_hash,
                                    {"sequence": expected_seq, "event_id": str(row.event_id)
                                     if row.sequence == expected_seq else None, "reason": problem})
            previous, expected_seq, checked = row.chain_hash, expected_seq + 1, checked + 1
    if checked != upto:
        return Verification(False, checked, upto, head_hash,
                            {"sequence": expected_seq, "event_id": None, "reason": "event missing from the store"})
    if previous != head_hash:
        return Verification(False, checked, upto, head_hash,
                            {"sequence": upto, "event_id": None, "reason": "chain head does not match the last event"})
    return Verification(True, checked, upto, head_hash, None)


def _check_row(row: StoredEvent, expected_seq: int, previous: str) -> str | None:
    if row.sequence != expected_seq:
        return f"event missing from the store (next stored sequence is {row.sequence})"
    if chain_hash(previous, row.sequence, row.recorded_at, row.body) != row.chain_hash:
        return "content, time or order changed: the recomputed chain hash differs from the stored one"
    try:
        body = orjson.loads(row.body)
    except orjson.JSONDecodeError:
        return "stored body is not valid JSON"
    columns = {"event_id": str(row.event_id), "type": row.type, "region_code": row.region_code,
               "source": row.source, "schema_version": row.schema_version}
    changed = [k for k, v in columns.items() if body.get(k) != v]
    if changed:
        return f"indexed columns disagree with the hashed body: {', '.join(changed)}"
    if content_hash(body) != row.content_hash:
        return "content hash does not match the stored body"
    return None
