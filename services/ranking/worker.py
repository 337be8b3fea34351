"""`python -m services.ranking.worker`: consume scoring's score messages, keep standings ranked.

Effectively once, as scoring: a batch's standings, history, outbox rows and consumed offsets are
written in ONE transaction; on assignment the consumer seeks to the offsets in our database; a
resent or older copy of a region's score (by scoring's `outbox_id`) is dropped. Unusable
messages go to `kaohe.scoring.scores.v1.dlt`.
"""

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

import httpx
from sqlalchemy import Engine
from sqlmodel import Session

from services.events import topics
from services.kit.access import service_headers
from services.kit.consumer import LogWatch, consume, group_consumer, leave, run_worker
from services.kit.db import service_engine
from services.kit.kafka import ensure_topics
from services.kit.logs import configure, in_message_context
from services.kit.outbox import Relay, dead_letter_row
from services.kit.settings import Settings
from services.ranking import store
from services.ranking.base import Outbox

log = logging.getLogger("services.ranking.worker")
GROUP = "kaohe-ranking"
DLT = topics.dead_letter(topics.SCORING_SCORES)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Worker:
    def __init__(self, settings: Settings, db: Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings, self.db, self.clock = settings, db, clock
        self.consumer = None
        self.logs = LogWatch()
        self.cache = store.Cache()  # the standings this worker last wrote (trusted while no one else wrote)

    def load_regions(self, stop: threading.Event, patience_s: float = 60.0) -> None:
        """Region names and levels from intake (cached: a restart needs no intake)."""
        deadline = time.monotonic() + patience_s
        while not stop.is_set():
            try:
                regions = httpx.get(f"{self.settings.intake_base_url}/v1/regions",
                                    headers=service_headers(self.settings), timeout=10).raise_for_status().json()
            except httpx.HTTPError as exc:
                with Session(self.db) as s:
                    cached = store.region_count(s)
                if cached or time.monotonic() > deadline:
                    log.warning("intake regions unavailable (%s); %d cached", exc, cached)
                    return
                stop.wait(1.0)
                continue
            with Session(self.db) as s:
                store.save_regions(s, regions)
                s.commit()
            return

    def connect(self) -> None:
        ensure_topics(self.settings.bootstrap_servers, [topics.SCORING_SCORES, DLT, topics.RANKING_STANDINGS],
                      self.settings.topic_partitions)
        self.consumer = group_consumer(self.settings, group=GROUP, topics=[topics.SCORING_SCORES],
                                       batch=self.settings.ranking_batch, on_assigned=self.seek_stored)

    def seek_stored(self, partitions) -> None:
        with Session(self.db) as s:
            stored = store.stored_offsets(s)
        self.logs.place(self.consumer, partitions, stored)
        log.info("assigned %s", sorted(tp.partition for tp in partitions))

    def log_replaced(self, replaced: set[str]) -> None:
        """Nothing to catch up from here: the new log is read from its start, and scoring, having caught
        up from its own replaced log, sends every current score again (a score the old log held
        unread arrives that way; one ranking has already changes nothing)."""

    def handle(self, messages) -> int:
        """Apply one poll's messages in one transaction; returns the standings that changed."""
        now = self.clock()
        batch = store.Batch(logs=dict(self.logs.ids))
        for m in in_message_context(messages):
            try:
                batch.add(store.parse(m.value, m.headers))
            except ValueError as exc:
                log.warning("dead-lettered %s[%d]@%d: %s", m.topic, m.partition, m.offset, exc)
                batch.dead_letters.append(dead_letter_row(Outbox, m, str(exc), now))
            batch.offsets[(m.topic, m.partition)] = m.offset + 1
        with Session(self.db) as s:
            history = store.write(s, batch, now, self.cache)
            s.commit()
        self.cache.committed()
        return len(history)

    def run(self, stop: threading.Event) -> None:
        # a lost log is read again from its start: older copies of a score are dropped by outbox_id
        consume(stop, self, self.settings.ranking_batch, connect=lambda: (self.load_regions(stop), self.connect()))

    def close(self) -> None:
        if self.consumer is not None:
            leave(self.consumer)


def build_relay(settings: Settings, db: Engine) -> Relay:
    return Relay.from_settings(settings, db, Outbox, [topics.RANKING_STANDINGS, DLT])


def main() -> None:
    configure()
    settings = Settings()
    db = service_engine(settings, "ranking")
    worker = Worker(settings, db)
    relay = build_relay(settings, db)
    run_worker("ranking", worker, relay)


if __name__ == "__main__":
    main()


__all__ = ["GROUP", "Worker", "build_relay", "main"]
