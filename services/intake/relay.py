"""`python -m services.intake.relay`: publish intake's event store to Kafka (its own process).

Intake's outbox is its event table: an append writes each event once, and this relay publishes
the events past the position it stored (`published`), in sequence order, then moves the position.
That holds because appends take the chain head's lock and keep it until they commit: the
committed sequences are always 1…n with no gap, so the events past the position are exactly the
ones not yet published, in the order they were stored. Each message is the event's export line
(`registry.encode_record`) keyed by its county, with the headers consumers read (`event_id`,
`type`, `schema_version`, `sequence`, the `request_id` that sent it, and `outbox_id`, here the
sequence: increasing, and the same on a resend).
"""

import logging
import signal
import threading
from datetime import datetime, timezone

import orjson
from sqlalchemy import select, update
from sqlmodel import Session

from services.events import registry, topics
from services.intake.store.models import Published, StoredEvent
from services.intake.store.service import PUBLISHED_POSITION, unpublished
from services.kit import metrics
from services.kit.db import service_engine
from services.kit.logs import configure
from services.kit.outbox import Message, Relay
from services.kit.settings import Settings

log = logging.getLogger("services.intake.relay")
_EVENT, _PUBLISHED = StoredEvent.__table__, Published.__table__


class EventRelay(Relay):
    """Publishes the events past the stored position; one relay per database publishes at a time
    (on PostgreSQL others wait on the position's row lock, each round, without blocking)."""

    def _read(self, s: Session, *, shared: bool) -> list[Message]:
        if shared:
            if not unpublished(session=s):  # idle: no row lock, which would make every poll a write
                return []                   # (a transaction id, and a WAL flush at its end)
            # held until this batch is marked: another relay reads nothing meanwhile
            position = s.execute(PUBLISHED_POSITION.with_for_update(skip_locked=True)).scalar_one_or_none()
            if position is None:
                return []
        else:  # SQLite: from what this relay published, marked or not (or what was marked before it started)
            position = max(self._published_through, s.execute(PUBLISHED_POSITION).scalar_one())
        rows = s.execute(
            select(_EVENT.c.sequence, _EVENT.c.recorded_at, _EVENT.c.body, _EVENT.c.region_code, _EVENT.c.request_id)
            .where(_EVENT.c.sequence > position).order_by(_EVENT.c.sequence).limit(self.batch_size))
        return _messages(rows)

    def _mark(self, conn, ids: list[int]) -> None:
        conn.execute(update(_PUBLISHED).where(_PUBLISHED.c.id == 1, _PUBLISHED.c.sequence < ids[-1])
                     .values(sequence=ids[-1]))

    def backlog(self) -> int:
        with Session(self.engine) as s:
            return unpublished(session=s)

    def oldest_unsent_age(self) -> float:
        """Seconds since the first event not yet marked published was stored; 0 when there is none."""
        with Session(self.engine) as s:
            oldest = s.execute(select(_EVENT.c.recorded_at)
                               .where(_EVENT.c.sequence == PUBLISHED_POSITION.scalar_subquery() + 1)
                               ).scalar_one_or_none()
        return 0.0 if oldest is None else max(0.0, (datetime.now(timezone.utc) - oldest).total_seconds())

    def prune(self) -> int:
        return 0  # the store keeps every event: there is nothing published to delete


def _messages(rows) -> list[Message]:
    """Each stored event as its message: the value is its export line (`recorded_at` formatted once
    for the events one append stored together), the headers come from the stored body and columns."""
    messages, last_at, at_iso = [], None, ""
    for sequence, recorded_at, body, region_code, request_id in rows:
        event = orjson.loads(body)
        if recorded_at != last_at:
            last_at, at_iso = recorded_at, registry.iso_utc(recorded_at)
        value = registry.encode_record(sequence, at_iso, event)
        number = str(sequence).encode()
        headers = [("event_id", event["event_id"].encode()), ("type", event["type"].encode()),
                   ("schema_version", str(event["schema_version"]).encode()), ("sequence", number)]
        if request_id is not None:
            headers.append(("request_id", request_id.encode()))
        headers.append(("outbox_id", number))
        messages.append(Message(sequence, topics.INTAKE_EVENTS, region_code.encode(), value, headers))
    return messages


def build(settings: Settings, engine=None) -> EventRelay:
    return EventRelay.from_settings(settings, engine or service_engine(settings, "intake"), Published,
                                    [topics.INTAKE_EVENTS, topics.dead_letter(topics.INTAKE_EVENTS)])


def main() -> None:
    configure()
    settings = Settings()
    relay = build(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = metrics.serve_for(settings, "intake-relay")
    log.info("relaying intake's event store to %s", settings.bootstrap_servers)
    try:
        relay.run(stop)
    finally:
        relay.close()
        metrics.stop(server)
        log.info("relay stopped")


if __name__ == "__main__":
    main()
