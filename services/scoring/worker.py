"""`python -m services.scoring.worker`: consume intake's events, keep every score current.

Effectively once: a batch's events, explanations, scores, outbox rows and the offsets it
consumed are written in ONE transaction; on assignment the consumer seeks to the offsets in our
database (Kafka's committed offsets are never used), and an event id already applied is skipped.
So a crash, a redelivery, a rebalance or a duplicate never counts anything twice or loses it.
"""

import logging
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone

import httpx
from kafka import ConsumerRebalanceListener, KafkaConsumer
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from services.events import registry, topics
from services.kit.db import service_engine
from services.kit.kafka import ensure_topics
from services.kit.logs import configure
from services.kit.outbox import Relay
from services.kit.settings import Settings
from services.scoring import policy_store, store
from services.scoring.base import Outbox
from services.scoring.models import WorkerClock
from services.scoring.policy.model import Policy, shipped

log = logging.getLogger("services.scoring.worker")
GROUP = "kaohe-scoring"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class _SeekToStored(ConsumerRebalanceListener):
    def __init__(self, worker: "Worker") -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked):  # state is committed per batch: nothing pending
        pass

    def on_partitions_assigned(self, assigned):
        self.worker.seek_stored(assigned)


class Worker:
    def __init__(self, settings: Settings, db: Engine, policy: Policy, *, clock: Callable[[], datetime] = utcnow
                 ) -> None:
        self.settings, self.db, self.policy, self.clock = settings, db, policy, clock
        self.consumer: KafkaConsumer | None = None
        self.scorer = None
        self.last_tick = 0.0

    # ---- set-up -----------------------------------------------------------------------------

    def load_counties(self, stop: threading.Event, patience_s: float = 60.0) -> None:
        """Counties and their baseline status from intake (cached, so a restart needs no intake).

        With nothing cached yet, wait for intake: scoring a county in the wrong league is worse
        than starting a little later.
        """
        deadline = time.monotonic() + patience_s
        while True:
            try:
                regions = httpx.get(f"{self.settings.intake_base_url}/v1/regions", params={"level": "county"},
                                    timeout=10).raise_for_status().json()
                break
            except httpx.HTTPError as exc:
                with Session(self.db) as s:
                    cached = len(store.counties(s))
                if cached or time.monotonic() > deadline or stop.is_set():
                    log.warning("intake regions unavailable (%s); using %d cached counties", exc, cached)
                    return
                stop.wait(1.0)
        with Session(self.db) as s:
            added = store.save_counties(s, regions)
            s.commit()
        if added:
            log.info("cached %d counties from intake", added)

    def restore(self) -> None:
        """The engine as committed: the stored events under the policy the stored scores used."""
        with Session(self.db) as s:
            statuses = store.counties(s)
            clock = s.get(WorkerClock, 1)
            policy_id = clock.policy_id if clock else policy_store.active_id(s, self.settings.scoring_policy)
            self.policy = policy_store.get(s, policy_id)
        started = time.monotonic()
        self.scorer, _ = store.rebuild(self.db, self.policy, statuses)
        log.info("engine rebuilt from %d applied events in %.1fs (policy %s, as of %s)", len(self.scorer.applied),
                 time.monotonic() - started, self.policy.id, self.scorer.as_of.isoformat())

    def switch_policy(self, policy_id: str) -> None:
        """Recompute every score from the event history under another policy, in one transaction."""
        now = self.clock()
        with Session(self.db) as s:
            statuses = store.counties(s)
            policy = policy_store.get(s, policy_id)
        started = time.monotonic()
        scorer, changes = store.rebuild(self.db, policy, statuses, as_of=max(now, self.scorer.as_of))
        with Session(self.db) as s:
            store.clear_results(s)
            store.write(s, scorer, store.Batch(changes=changes), now=now, clock_moved=True)
            s.commit()
        self.scorer, self.policy = scorer, policy
        log.info("policy %s active: %d applied events rescored in %.1fs", policy_id, len(scorer.applied),
                 time.monotonic() - started)

    def connect(self) -> None:
        ensure_topics(self.settings.bootstrap_servers, [topics.INTAKE_EVENTS, topics.dead_letter(topics.INTAKE_EVENTS),
                                                         topics.SCORING_SCORES], self.settings.topic_partitions)
        self.consumer = KafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers.split(","), group_id=GROUP, client_id="kaohe-scoring",
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=self.settings.scoring_batch,
            # a group join lasts about max_poll_interval_ms (the rebalance timeout): keep it short
            max_poll_interval_ms=self.settings.consumer_max_poll_interval_ms, session_timeout_ms=self.settings.consumer_session_timeout_ms,
            heartbeat_interval_ms=min(3_000, self.settings.consumer_session_timeout_ms // 3),
            group_instance_id=self.settings.consumer_instance_id,
        )
        self.consumer.subscribe([topics.INTAKE_EVENTS], listener=_SeekToStored(self))

    def seek_stored(self, partitions) -> None:
        with Session(self.db) as s:
            stored = store.stored_offsets(s, topics.INTAKE_EVENTS)
        for tp in partitions:
            if tp.partition in stored:
                self.consumer.seek(tp, stored[tp.partition])
            else:
                self.consumer.seek_to_beginning(tp)
        log.info("assigned %s", sorted(tp.partition for tp in partitions))

    # ---- the loop ---------------------------------------------------------------------------

    def handle(self, messages) -> int:
        """Apply one poll's messages and commit everything they caused; returns score rows changed."""
        now = self.clock()
        batch = store.Batch()
        for m in messages:
            event_id = None
            try:
                record = registry.decode_record(m.value)
                event_id = str(record.event.event_id)
            except (ValueError, TypeError, registry.ValidationError) as exc:
                batch.dead_letters.append(store.dead_letter(m, f"{type(exc).__name__}: {exc}", now))
                log.warning("dead-lettered %s[%d]@%d: %s", m.topic, m.partition, m.offset,
                            str(exc).splitlines()[0])
            else:
                if record.event.event_id not in self.scorer.applied:
                    batch.changes += self.scorer.apply(record)
                    batch.applied.append((record, m.value))
            batch.offsets[(m.topic, m.partition)] = (m.offset + 1, event_id)
        with Session(self.db) as s:
            changed = store.write(s, self.scorer, batch, now=now)
            s.commit()
        return changed

    def tick(self) -> int:
        """Advance the clock: deadlines that passed lower scores with no event arriving.

        Also where a newly activated policy takes effect.
        """
        with Session(self.db) as s:
            active = policy_store.active_id(s, self.settings.scoring_policy)
        if active != self.policy.id:
            self.switch_policy(active)
        now = self.clock()
        batch = store.Batch(changes=self.scorer.advance(now))
        with Session(self.db) as s:
            changed = store.write(s, self.scorer, batch, now=now, clock_moved=True)
            s.commit()
        self.last_tick = time.monotonic()
        return changed

    def run(self, stop: threading.Event) -> None:
        self.load_counties(stop)
        self.restore()
        self.connect()
        self.tick()
        backoff = 0.5
        while not stop.is_set():
            try:
                polled = self.consumer.poll(timeout_ms=200, max_records=self.settings.scoring_batch)
                messages = [m for tp in sorted(polled, key=lambda t: t.partition) for m in polled[tp]]
                if messages:
                    self.handle(messages)
                if time.monotonic() - self.last_tick >= self.settings.scoring_tick_s:
                    self.tick()
                backoff = 0.5
            except (OperationalError, DBAPIError) as exc:
                # not a poison message: the database is away. Forget what this batch did in
                # memory, go back to the stored offsets, and retry after a pause.
                log.warning("database unavailable (%s); retrying in %.1fs", str(exc).splitlines()[0], backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                try:
                    self.restore()
                    self.seek_stored(self.consumer.assignment())
                except (OperationalError, DBAPIError):
                    pass

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()


def build_relay(settings: Settings, db: Engine) -> Relay:
    return Relay.from_settings(settings, db, Outbox,
                               [topics.SCORING_SCORES, topics.dead_letter(topics.INTAKE_EVENTS)])


def main() -> None:
    configure()
    settings = Settings()
    db = service_engine(settings, "scoring")
    worker = Worker(settings, db, shipped(settings.scoring_policy))
    relay = build_relay(settings, db)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # the outbox relay is its own thread with its own producer (the consumer stays on this thread)
    relay_thread = threading.Thread(target=relay.run, args=(stop,), name="scoring-relay", daemon=True)
    relay_thread.start()
    try:
        worker.run(stop)
    finally:
        stop.set()
        worker.close()
        relay_thread.join(15)
        relay.close()
        log.info("scoring worker stopped")


if __name__ == "__main__":
    main()


__all__ = ["GROUP", "Worker", "build_relay", "main"]
