"""`python -m services.scoring.worker`: consume intake's events, keep every score current.

Effectively once: a batch's events, explanations, scores, outbox rows and the offsets it
consumed are written in ONE transaction; on assignment the consumer seeks to the offsets in our
database (Kafka's committed offsets are never used), and an event id already applied is skipped.
So a crash, a redelivery, a rebalance or a duplicate never counts anything twice or loses it.

Several workers can share the group and the database: each owns the counties of the partitions it
was assigned (intake keys events by county), rebuilds its engine from their applied events on
every assignment, and claims those partitions in the database. Writes take one lock (the worker
clock's row), so prefecture scores aggregate committed county rows; a write from a worker whose
partitions were claimed by another since, or whose engine predates a recomputation, raises
`store.Stale` and changes nothing (the worker rebuilds and goes on).
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import TypeVar

import httpx
import orjson
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import OffsetOutOfRangeError
from kafka.partitioner.default import murmur2
from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session

from services.events import topics
from services.kit import heap, metrics
from services.kit.access import service_headers
from services.kit.consumer import Backoff, LogWatch, group_consumer, leave, log_id, poll_ordered, run_worker
from services.kit.db import service_engine
from services.kit.kafka import ensure_topics
from services.kit.logs import configure, message_context
from services.kit.outbox import dead_letter_row
from services.kit.relay_process import RelayProcess
from services.kit.settings import Settings
from services.scoring import policy_store, store
from services.scoring.base import Outbox
from services.scoring.engine import view
from services.scoring.engine.engine import Engine as Scorer
from services.scoring.models import ConsumerOffset, RebuildRequest, WorkerClock
from services.scoring.policy.model import Policy, shipped
from services.scoring.relay import build as build_relay
from services.scoring.writer import ProcessWriter, ThreadWriter, persist

log = logging.getLogger("services.scoring.worker")
GROUP = "kaohe-scoring"
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def partition_of(county: str, partitions: int) -> int:
    """The partition intake's events of `county` land in: the producer's default partitioner
    (murmur2 of the key, as the Java client; intake keys events by county)."""
    return (murmur2(county.encode()) & 0x7FFFFFFF) % partitions


RELEASE_FROM = 100_000  # events an engine holds from which dropping it gives its memory back
ASK_EVERY_S = 1.0  # how often a placed worker looks for a newly activated policy or a rebuild request


def claimable(now: datetime) -> tuple:
    """Rebuild requests not done and not claimed, or claimed an hour before `now` (the worker died)."""
    lapsed = now - timedelta(hours=1)
    return RebuildRequest.done_at.is_(None), RebuildRequest.started_at.is_(None) | (RebuildRequest.started_at < lapsed)


class Worker:
    def __init__(self, settings: Settings, db: Engine, policy: Policy, *, clock: Callable[[], datetime] = utcnow,
                 writer: ThreadWriter | ProcessWriter | None = None) -> None:
        self.settings, self.db, self.policy, self.clock = settings, db, policy, clock
        self.configured = policy  # what KAOHE_SCORING_POLICY names (`declare_policy`)
        self.declared = False
        self.consumer: KafkaConsumer | None = None
        self.scorer = None
        self.last_tick = 0.0
        self.last_asked = 0.0  # when `asked_lately` last looked
        self.put_off = False  # a tick came before the group placed this worker: its recomputations wait
        self.log_replaced = False  # set on assignment when a partition is not the log we read
        # topic → the id of its log as `run`'s LogWatch saw it after the poll being applied, stored
        # with that poll's offsets (read there, not again at apply time: an id that changed in between
        # would stamp the old log's offsets with the new log's id; this way a change errs the safe way)
        self.log_ids: dict[str, str] = {}
        # what this worker may write: the partitions it claimed (as `owner`) and their counties
        self.owner: str | None = None
        self.partitions: frozenset[int] = frozenset()
        self.partition_count = 0
        self.generation = 0  # of the stored scores this engine was built from
        self.stored_at: dict[int, store.Position] = {}  # the stored positions the engine matches
        # the batch being written while the next is applied (`submit`, `settle`): one at a time,
        # on a thread or (as deployed, `main`) in a child process
        self.persister = writer or ThreadWriter(db)
        # what `polling_while` runs (a recomputation) while this thread keeps the group's heartbeat
        self.background = ThreadPoolExecutor(1, thread_name_prefix="scoring-background")
        self.in_flight: tuple[Future, store.Prepared] | None = None
        # batches (and ticks) the engine holds whose write failed (the database was away), in
        # order: written again once it answers (`write_unwritten`), instead of rebuilding the engine
        self.unwritten: list[store.Prepared] = []
        # rebuild requests this worker claimed whose recomputation a database outage broke off:
        # taken up again by its next tick, not left to lapse (an hour: `claimable`)
        self.claimed_rebuilds: set[int] = set()

    # ---- set-up -----------------------------------------------------------------------------

    def load_counties(self, stop: threading.Event, patience_s: float = 60.0) -> None:
        """Counties, their baseline status and exit year, from intake (cached: a restart needs no intake).

        With nothing cached yet, wait for intake: scoring a county in the wrong league is worse
        than starting a little later.
        """
        deadline = time.monotonic() + patience_s
        while True:
            try:
                regions = httpx.get(f"{self.settings.intake_base_url}/v1/regions", params={"level": "county"},
                                    headers=service_headers(self.settings), timeout=10).raise_for_status().json()
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

    def declare_policy(self) -> None:
        """Once, at start: this worker's configured policy becomes every worker's
        (`policy_store.declare_configured`). Workers started earlier follow it at their next look
        (`asked_lately`): the first to take the writers' lock rescores, the others rebuild their
        engines, and nobody rescores back (a rolling update that changes KAOHE_SCORING_POLICY)."""
        if self.declared:
            return
        with Session(self.db) as s:
            replaced = policy_store.declare_configured(s, self.configured, self.clock())
            s.commit()
        self.declared = True
        if replaced is not None:
            log.info("configured policy %s declared (was %s): every worker follows it unless one is active "
                     "over the API", self.configured.id, replaced)

    def owns(self, county: str) -> bool:
        return bool(self.partition_count) and partition_of(county, self.partition_count) in self.partitions

    @property
    def fence(self) -> store.Fence:
        return store.Fence(self.generation, self.owner, self.partitions)

    def restore(self) -> None:
        """The engine as committed, for the counties this worker owns: their stored events under
        the policy the stored scores used."""
        self.settle(quietly=True)  # what is in flight is either stored or read again
        with Session(self.db) as s:
            statuses, exit_years = store.counties(s), store.exit_years(s)
            clock = s.get(WorkerClock, 1)
            policy_id = clock.policy_id if clock and clock.policy_id else \
                policy_store.active_id(s, self.settings.scoring_policy)
            self.generation = clock.generation if clock else 0
            self.policy = policy_store.get(s, policy_id)
            stored_at = store.positions(s, topics.INTAKE_EVENTS, self.partitions)
        started = time.monotonic()
        self.drop_engine()  # the old engine goes first: one engine in memory at a time (`run` retries on failure)
        with self.staying_in_group() as meanwhile:
            self.scorer = store.rebuild(self.db, self.policy, statuses, exit_years=exit_years, owned=self.owns,
                                        meanwhile=meanwhile)
        self.stored_at = stored_at  # (the partitions are claimed: no other worker writes them meanwhile)
        log.info("engine rebuilt from %d applied events of partitions %s in %.1fs (policy %s, as of %s)",
                 len(self.scorer.applied), sorted(self.partitions), time.monotonic() - started, self.policy.id,
                 self.scorer.as_of.isoformat())

    def drop_engine(self) -> None:
        """Drop the engine, and with a large one its memory (`kit.heap.release`), so that the engine
        built next takes its place rather than growing beside its fragments: at a million events
        that was 50-80 MB over the 300 MB target (docs/performance.md, peak memory). A small engine
        is just dropped: the release's full collection costs time between polls and gains nothing."""
        large = self.scorer is not None and len(self.scorer.applied) >= RELEASE_FROM
        self.scorer = None
        if large:
            heap.release()

    def export_lines(self) -> Iterator[str]:
        """Intake's whole event store, in sequence order (`GET /v1/events/export`), streamed."""
        with httpx.stream("GET", f"{self.settings.intake_base_url}/v1/events/export",
                          headers=service_headers(self.settings),
                          timeout=httpx.Timeout(10.0, read=300.0)) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line:
                    yield line

    def recompute(self, policy_id: str, *, from_intake: bool, unless_current: bool = False) -> int:
        """Every score recomputed from the event history under `policy_id`, in one transaction.

        From intake's export (the store of record; the applied events become exactly its events),
        or from the events this worker applied. The API keeps serving the old scores until commit.
        `unless_current`: a policy switch, left to the worker that did it first (`store.recompute`).
        """
        self.settle()
        now = self.clock()
        as_of = max(now, self.scorer.as_of if self.scorer is not None else store.stored_as_of(self.db))
        with Session(self.db) as s:
            statuses, exit_years = store.counties(s), store.exit_years(s)
            policy = policy_store.get(s, policy_id)
        started = time.monotonic()
        records = self.export_lines() if from_intake else store.stored_records(self.db)
        self.drop_engine()  # one engine in memory at a time (`run` restores it if this fails)

        def rescore(check: Callable[[], None]) -> Scorer | None:
            with Session(self.db) as s:
                scorer = store.recompute(s, policy, statuses, every(records, 5000, check), as_of=as_of, now=now,
                                         replace_applied=from_intake, exit_years=exit_years,
                                         unless_current=unless_current)
                s.commit()
            return scorer

        with self.staying_in_group() as meanwhile:
            scorer = self.polling_while(rescore, meanwhile)
        if scorer is None:
            log.info("policy %s: another worker rescored every score under it meanwhile", policy_id)
            self.restore()
            return 0
        rescored = len(scorer.applied)
        log.info("policy %s: %d events rescored from %s in %.1fs", policy_id, rescored,
                 "intake's export" if from_intake else "the applied events", time.monotonic() - started)
        if self.partition_count and len(self.partitions) == self.partition_count:
            # this worker owns every county: the new engine is the one it would restore
            self.scorer, self.policy = scorer, policy
            with Session(self.db) as s:
                self.generation = s.get(WorkerClock, 1).generation
        else:
            # every county's engine goes (with its memory, if large) before this worker's share is built
            self.scorer = scorer
            del scorer
            self.drop_engine()
            self.restore()  # back to this worker's counties, at the new generation
        return rescored

    @contextmanager
    def staying_in_group(self) -> Iterator[Callable[[], None]]:
        """For long work inside the poll loop (building the engine, recomputing every score): the
        partitions are paused and the returned function, called now and then, polls, so that the
        group keeps this worker (max.poll.interval) while no message is read. A rebalance during
        the work raises `Reassigned` (the work was for partitions no longer ours)."""
        consumer = self.consumer
        if consumer is None:
            yield lambda: None
            return
        paused = set(consumer.assignment()) - set(consumer.paused())
        consumer.pause(*paused)
        owner, last = self.owner, [time.monotonic()]

        def meanwhile() -> None:
            if time.monotonic() - last[0] < 1.0:
                return
            last[0] = time.monotonic()
            for tp, read in consumer.poll(timeout_ms=0).items():  # only newly assigned partitions can have any
                consumer.seek(tp, read[0].offset)  # not handled: read again later
            if self.owner != owner:
                raise Reassigned(f"partitions reassigned while {'rebuilding' if self.scorer is None else 'working'}")

        try:
            yield meanwhile
        finally:
            consumer.resume(*(paused & set(consumer.assignment())))

    def polling_while(self, work: Callable[[Callable[[], None]], T], meanwhile: Callable[[], None]) -> T:
        """`work(check)` done on the background thread while this thread calls `meanwhile` (it polls),
        so that the group keeps this worker through the whole of a long step: a recomputation's
        final write and commit take tens of seconds at a million events, with no point inside them
        to poll from, and a worker the group dropped spent about 20 s rejoining with nothing scored.

        Once `meanwhile` raises (`Reassigned`: a rebalance), `check`, called by the work now and
        then, stops it there (its transaction rolls back) and the error is raised here. Work that
        was past its last check stands (done and committed): after a rebalance its result is
        returned and the caller goes on to the new partitions."""
        self.settle()  # one write at a time, and the database's state is the one `work` starts from
        interrupted: list[Exception] = []

        def check() -> None:
            if interrupted:
                raise _Interrupted

        future = self.background.submit(work, check)
        while True:
            try:
                future.exception(timeout=0.5)  # done (whether it raised or not)
                break
            except TimeoutError:
                if not interrupted:
                    try:
                        meanwhile()
                    except Exception as exc:
                        interrupted.append(exc)
        if interrupted and not (isinstance(interrupted[0], Reassigned) and future.exception() is None):
            raise interrupted[0]
        return future.result()

    def switch_policy(self, policy_id: str) -> None:
        """A newly active policy: rescore from intake's export, or from our own copy if intake is away."""
        try:
            self.recompute(policy_id, from_intake=True, unless_current=True)
        except httpx.HTTPError as exc:
            log.warning("intake's export unavailable (%s): rescoring the applied events instead", exc)
            self.recompute(policy_id, from_intake=False, unless_current=True)

    def serve_rebuild_requests(self) -> None:
        """Carry out `POST /v1/rebuilds`: rebuild from intake's export; record the outcome.

        One worker claims a request (under the writers' lock); a claim an hour old is taken over
        (its worker died mid-rebuild). One whose recomputation a database outage broke off is
        taken up again by the next tick of the worker that claimed it (`claimed_rebuilds`).
        """
        with Session(self.db) as s:
            store.lock(s)
            mine = and_(RebuildRequest.id.in_(self.claimed_rebuilds), RebuildRequest.done_at.is_(None))
            pending = s.execute(select(RebuildRequest).where(or_(and_(*claimable(self.clock())), mine))
                                .order_by(RebuildRequest.id)).scalars().all()
            ids = [r.id for r in pending]
            for r in pending:
                r.started_at = self.clock()
            s.commit()
        self.claimed_rebuilds = set(ids)  # until recorded done (or given back on a rebalance)
        if not ids:
            return
        events, error = None, None
        try:
            events = self.recompute(self.policy.id, from_intake=True)
        except Reassigned:
            with Session(self.db) as s:  # not done: taken up again (by whichever worker) shortly
                s.execute(update(RebuildRequest).where(RebuildRequest.id.in_(ids)).values(started_at=None))
                s.commit()
            self.claimed_rebuilds = set()
            raise
        except httpx.HTTPError as exc:
            error = f"intake's export unavailable: {exc}"
            log.warning("rebuild failed: %s", error)
        with Session(self.db) as s:
            for r in s.execute(select(RebuildRequest).where(RebuildRequest.id.in_(ids))).scalars():
                r.done_at, r.events, r.error = self.clock(), events, error
            s.commit()
        self.claimed_rebuilds = set()

    def catch_up(self) -> int:
        """After the broker's log was replaced (a broker that lost its data, retention): apply, in
        intake's order, every stored event not yet applied, and send every current score again (the
        scores log went with it: a score message it held that ranking had not read would never come
        again). Then the new log is read from its start. Nothing of the new log is committed before
        both are: a worker that dies meanwhile finds its stored offsets still the old log's, and does
        both again."""
        with self.staying_in_group() as meanwhile:
            applied = self._catch_up(every(self.export_lines(), 5000, meanwhile))
        self.resend_scores()
        return applied

    def resend_scores(self) -> int:
        """Every current score of this worker's counties and their prefectures as a score message
        again, nothing moved in it: ranking drops it where it has that score already, notify sees no
        grade crossed."""
        self.settle()
        with Session(self.db) as s:
            store.lock(s)
            sent = store.resend_scores(s, owned=self.owns, now=self.clock())
            s.commit()
        log.warning("sent the %d current scores again", sent)
        return sent

    def _catch_up(self, lines: Iterable[str]) -> int:
        applied, batch = 0, store.Batch()
        for line in lines:
            record = view.decode(line)
            if self.scorer.has(record.event.event_id) or not self.owns(record.event.region_code):
                continue
            batch.changes += self.scorer.apply(record)
            batch.applied.append((record.event.region_code, line))
            if len(batch.applied) >= self.settings.scoring_batch:
                applied += self._commit(batch)
                batch = store.Batch()
        applied += self._commit(batch)
        log.warning("caught up from intake's export: %d events the log no longer held", applied)
        return applied

    def _commit(self, batch: store.Batch) -> int:
        self.settle()
        with Session(self.db) as s:
            store.write(s, self.scorer, batch, now=self.clock(), fence=self.fence)
            s.commit()
        self._committed(batch)
        return batch.events

    def _committed(self, batch: store.Batch) -> None:
        self.stored_at.update({p: v for (t, p), v in batch.offsets.items() if t == topics.INTAKE_EVENTS})
        metrics.SCORING_EVENTS.inc(batch.events)

    def connect(self) -> None:
        ensure_topics(self.settings.bootstrap_servers, [topics.INTAKE_EVENTS, topics.dead_letter(topics.INTAKE_EVENTS),
                                                         topics.SCORING_SCORES], self.settings.topic_partitions)
        self.consumer = group_consumer(self.settings, group=GROUP, topics=[topics.INTAKE_EVENTS],
                                       batch=self.settings.scoring_batch, on_assigned=self.on_assigned)

    def on_assigned(self, partitions) -> None:
        """A rebalance gave this worker `partitions`: claim them and seek to the offsets stored for
        them. The engine for their counties is built after the rebalance, in the poll loop
        (`run`), not here: at a million events that takes half a minute, and a rebalance callback
        that long blocks the consumer's heartbeats until the group drops it."""
        self.settle(quietly=True)
        self.owner = uuid.uuid4().hex
        previous = (self.partitions, self.partition_count)
        self.partitions = frozenset(tp.partition for tp in partitions)
        self.partition_count = len(self.consumer.partitions_for_topic(topics.INTAKE_EVENTS) or ())
        with Session(self.db) as s:
            stored, clock = store.claim(s, topics.INTAKE_EVENTS, self.partitions, self.owner)
            s.commit()
        if (self.scorer is None or clock.generation != self.generation or stored != self.stored_at
                or (self.partitions, self.partition_count) != previous):
            self.scorer = None  # built by `run` before anything is applied
        else:
            log.info("partitions %s again, nothing written to them since: the engine stays", sorted(self.partitions))
        self.seek_stored(partitions, stored)

    def reseek(self) -> None:
        """After a failed or refused write: back to the stored offsets of the partitions still ours;
        those another worker claimed are paused until the coming rebalance takes them away."""
        self.settle(quietly=True)
        with Session(self.db) as s:
            rows = s.execute(select(ConsumerOffset.partition, ConsumerOffset.next_offset,
                                    ConsumerOffset.last_event_id, ConsumerOffset.topic_id, ConsumerOffset.owner)
                             .where(ConsumerOffset.topic == topics.INTAKE_EVENTS)).all()
        mine = {r.partition: (r.next_offset, r.last_event_id, r.topic_id) for r in rows if r.owner == self.owner}
        lost = {tp for tp in self.consumer.assignment() if tp.partition not in mine}
        if lost:
            log.warning("partitions %s were claimed by another worker: paused until the rebalance",
                        sorted(tp.partition for tp in lost))
            self.consumer.pause(*lost)
            self.partitions = frozenset(self.partitions - {tp.partition for tp in lost})
        self.seek_stored([tp for tp in self.consumer.assignment() if tp.partition in mine],
                         {p: v for p, v in mine.items() if v[0] >= 0})

    def seek_stored(self, partitions, stored: dict[int, store.Position]) -> None:
        """Seek to the stored offsets, after checking the log is still the one we read: by the topic
        id stored with the offset, or, for an offset stored without one, by reading the event before
        it (`same_log`)."""
        probe = None  # one reader for every partition to check by reading, only if there is one
        try:
            for tp in partitions:
                if tp.partition not in stored:
                    self.consumer.seek_to_beginning(tp)
                    continue
                offset, last_event_id, stored_id = stored[tp.partition]
                now = log_id(self.consumer, tp.topic)
                if stored_id is not None and now is not None:
                    same = stored_id == now
                else:
                    probe = probe or KafkaConsumer(
                        bootstrap_servers=self.settings.bootstrap_servers.split(","), group_id=None,
                        enable_auto_commit=False, auto_offset_reset="none", client_id="kaohe-scoring-probe")
                    same = same_log(probe, tp, offset, last_event_id)
                if same:
                    self.consumer.seek(tp, offset)
                else:
                    log.warning("partition %d is not the log we read (offset %d, event %s, topic id %s; now %s): "
                                "catching up from intake, then reading it from the start", tp.partition, offset,
                                last_event_id, stored_id, now)
                    self.log_replaced = True
                    self.consumer.seek_to_beginning(tp)
        finally:
            if probe is not None:
                probe.close()
        log.info("assigned %s", sorted(tp.partition for tp in partitions))

    # ---- the loop ---------------------------------------------------------------------------

    def handle(self, messages) -> int:
        """Apply one poll's messages and commit everything they caused; returns score rows changed."""
        self.submit(messages)
        return self.settle()

    def submit(self, messages) -> None:
        """Apply one poll's messages and hand their rows to the writer (a thread, or as deployed a
        child process: services/scoring/writer.py), which commits them while the next poll is read
        and applied (the database's time overlaps the engine's). The write before is waited for
        first: writes stay in order, one in flight. Its failure is raised here, or by `settle`:
        the engine is then ahead of the database. If the database was away (OperationalError),
        `run` writes the batches again once it answers (`write_unwritten`); otherwise it rebuilds
        the engine (`resync`)."""
        with heap.deferred():  # a poll's garbage goes at its end, not walked in the middle
            prepared = self._apply(messages)
        if self.unwritten:  # (`run` writes them before it polls) writes stay in order
            self.unwritten.append(prepared)
            self.write_unwritten()
            return
        try:
            self.settle()
        except OperationalError:
            self.unwritten.append(prepared)  # after the one that failed: both written again, in order
            raise
        self.in_flight = (self.persister.submit(prepared), prepared)

    def _apply(self, messages) -> store.Prepared:
        """One poll's messages applied to the engine, as the rows their write holds."""
        now = self.clock()
        batch = store.Batch()
        partitions, scorer = self.partitions, self.scorer
        log_ids = self.log_ids
        for m in messages:
            if m.partition not in partitions:
                continue  # fetched before another worker claimed it: that worker reads it again
            event_id = None
            try:
                record = view.decode(m.value)
            except (ValueError, TypeError) as exc:
                batch.dead_letters.append(dead_letter_row(Outbox, m, f"{type(exc).__name__}: {exc}", now))
                with message_context(m):
                    log.warning("dead-lettered %s[%d]@%d: %s", m.topic, m.partition, m.offset,
                                str(exc).splitlines()[0])
            else:
                event_id = view.id_text(record.event_id)  # (a view's record is its own event)
                changes = scorer.apply_new(record, cause=event_id)
                if changes is not None:  # not applied before
                    batch.changes += changes
                    batch.applied.append((record.region_code, m.value))
                    # the ids it came with go on the score messages it causes (its request id at intake)
                    batch.sources[event_id] = m
            batch.offsets[(m.topic, m.partition)] = (m.offset + 1, event_id, log_ids.get(m.topic))
        return store.prepare(scorer, batch, now=now, fence=self.fence)

    def settle(self, *, quietly: bool = False) -> int:
        """Wait for the write in flight; returns the score rows it changed. Its error is raised; an
        OperationalError (the database away) keeps the batch for `write_unwritten`.

        `quietly` (the caller goes back to what is stored anyway): an error is logged and 0
        returned, and the engine is dropped if it holds a batch that was not stored."""
        changed = 0
        if self.in_flight is not None:
            future, prepared = self.in_flight
            self.in_flight = None
            try:
                changed = future.result()
            except Exception as exc:
                if not quietly:
                    if isinstance(exc, OperationalError):
                        self.unwritten.append(prepared)
                    raise
                log.warning("the batch being written was not stored (%s): it is read again",
                            str(exc).splitlines()[0])
                self.scorer = None
            else:
                self._committed(prepared.batch)
        if quietly and self.unwritten:
            log.warning("%d batches whose write failed are read again", len(self.unwritten))
            self.unwritten.clear()
            self.scorer = None
        return changed

    def write_unwritten(self) -> None:
        """Write, in order, the batches whose write failed while the database was away: the engine
        holds them already, so a database away for a moment costs a retry, not a rebuild of the
        engine from every stored event. The writes are fenced as before (`store.Stale`)."""
        while self.unwritten:
            persist(self.db, self.unwritten[0])  # here, not by the writer: nothing is in flight
            self._committed(self.unwritten.pop(0).batch)
        log.info("the batches whose write failed are stored now")

    def tick(self) -> int:
        """Advance the clock: deadlines that passed lower scores with no event arriving.

        Also where a newly activated policy takes effect and rebuild requests are served, once the
        group has placed this worker: a recomputation before its first assignment would build
        every county's engine only to drop it for this worker's share when the assignment comes,
        the costliest way in memory (docs/performance.md, the late-assignment path). `run` ticks
        again as soon as the assignment comes.
        """
        self.settle()  # (a write in flight that failed is kept: `unwritten`)
        # from here the database holds whatever the engine does and the consumer has read, but for
        # what `unwritten` keeps: its outage puts the tick off (`TickPutOff`), with nothing to rebuild
        prepared = None
        try:
            if self.unwritten:  # first, in order (`run` writes them before it ticks)
                self.write_unwritten()
            self.put_off = self.consumer is not None and self.owner is None
            if not self.put_off:
                self.recompute_if_asked()
            if self.scorer is None:  # a recomputation failed after dropping the engine
                self.restore()
            now = self.clock()
            prepared = store.prepare(self.scorer, store.Batch(changes=self.scorer.advance(now)), now=now,
                                     clock_moved=True, fence=self.fence)
            changed = persist(self.db, prepared)
        except OperationalError as exc:
            if prepared is not None:
                # the engine has moved its clock: its rows are kept, like a batch, for `run` to
                # write once the database answers (`write_unwritten`)
                self.unwritten.append(prepared)
            raise TickPutOff(str(exc).splitlines()[0]) from exc
        self.last_tick = time.monotonic()
        return changed

    def recompute_if_asked(self) -> None:
        """A newly activated policy (if another worker already rescored under it, only the engine is
        restored: `store.recompute`, `unless_current`), then the pending rebuild requests."""
        with Session(self.db) as s:
            active = policy_store.active_id(s, self.settings.scoring_policy)
        if active != self.policy.id:
            self.switch_policy(active)
        self.serve_rebuild_requests()

    def asked_lately(self) -> bool:
        """Whether a policy was activated or a rebuild requested that this worker has not served:
        looked up about every second once the group has placed it (`run` then ticks), so neither
        waits for the next tick (every 60 s by default)."""
        if self.owner is None or time.monotonic() - self.last_asked < ASK_EVERY_S:
            return False
        self.last_asked = time.monotonic()
        try:
            with Session(self.db) as s:
                if policy_store.active_id(s, self.settings.scoring_policy) != self.policy.id:
                    return True
                return s.execute(select(RebuildRequest.id).where(*claimable(self.clock())).limit(1)).first() is not None
        except (OperationalError, DBAPIError) as exc:
            # only a look: the engine is still good (the next write meets the outage and backs off,
            # keeping its batch); raised here it would rebuild the engine once the database is back
            log.debug("could not look for rebuild requests (%s)", str(exc).splitlines()[0])
            return False

    def start(self, stop: threading.Event) -> bool:
        """Counties, engine, consumer and a first tick; retried while the database is away."""
        backoff = Backoff()
        while not stop.is_set():
            try:
                self.declare_policy()
                self.load_counties(stop)
                self.restore()
                if self.consumer is None:
                    self.connect()
                self.tick()
                return True
            except (OperationalError, DBAPIError, TickPutOff) as exc:
                backoff.wait(stop, "database (at start)", exc)
        return False

    def run(self, stop: threading.Event) -> None:
        if not self.start(stop):
            return
        backoff = Backoff()
        watch = LogWatch()
        resync = False  # go back to the stored offsets and state before reading on
        while not stop.is_set():
            try:
                if resync:
                    self.reseek()
                    self.restore()
                    resync = False
                elif self.unwritten:
                    self.write_unwritten()
                elif self.put_off and self.owner is not None:  # placed at last: what the tick put off
                    self.tick()
                elif self.scorer is None:  # a new assignment (positions already set), or a failed rebuild
                    self.restore()
                messages = poll_ordered(self.consumer, self.settings.scoring_batch)
                if self.scorer is None:  # that poll brought a new assignment: build its engine first
                    firsts = {(m.topic, m.partition): m.offset for m in reversed(messages)}
                    for (topic, partition), offset in firsts.items():
                        self.consumer.seek(TopicPartition(topic, partition), offset)  # read again after
                    continue
                if watch.replaced(self.consumer):
                    # the broker lost its log and recreated the topic while we stayed in the group:
                    # our position points into the new log and would skip its head. Drop this
                    # poll, catch up from intake, then read the new log from its start.
                    log.warning("%s was recreated (the broker lost its log)", topics.INTAKE_EVENTS)
                    self.log_replaced, messages = True, []
                    self.consumer.seek_to_beginning(*self.consumer.assignment())
                self.log_ids = dict(watch.ids)
                if self.log_replaced:  # before anything the new log holds (seek_stored set it)
                    self.catch_up()
                    self.log_replaced = False
                if messages:
                    self.submit(messages)  # written while the next poll is read and applied
                else:
                    self.settle()
                if time.monotonic() - self.last_tick >= self.settings.scoring_tick_s or self.asked_lately():
                    self.tick()
                backoff.reset()
            except store.Stale as exc:
                log.info("%s: rebuilding the engine", exc)
                resync = True
            except Reassigned as exc:
                log.info("%s: building the engine for the new ones", exc)
            except TickPutOff as exc:
                backoff.wait(stop, "database (a tick)", exc)  # and go on: the engine is as stored, or held
            except OffsetOutOfRangeError as exc:
                # our position is past the end of the log: the broker lost it (tansu keeps
                # nothing on restart; retention on real Kafka). Catch up, then read from the start.
                log.warning("offsets out of range %s: the log was replaced", exc)
                self.log_replaced = True
                self.consumer.seek_to_beginning(*self.consumer.assignment())
            except (OperationalError, DBAPIError, httpx.HTTPError) as exc:
                # not a poison message: the database (or, to catch up, intake) is away. Read nothing
                # on meanwhile (the consumer's position is past what was never committed). Once it
                # answers: batches whose write failed and that the engine holds are written again
                # (`unwritten`); anything else, forget what the engine did in memory and go back
                # to the stored offsets and state
                backoff.wait(stop, "intake" if isinstance(exc, httpx.HTTPError) else "database", exc)
                resync = not (self.unwritten and isinstance(exc, OperationalError))

    def close(self) -> None:
        self.settle(quietly=True)
        self.persister.close()
        self.background.shutdown()
        if self.consumer is not None:
            leave(self.consumer)


class Reassigned(Exception):
    """A rebalance happened while the worker was busy between polls: what it was doing was for
    partitions it may no longer own. Nothing was written; `run` builds the engine again."""


class TickPutOff(Exception):
    """A tick the database's outage put off (its OperationalError is the cause): the engine is as
    stored, or holds the tick's rows for `write_unwritten`. `run` backs off and goes on, with
    nothing to rebuild."""


class _Interrupted(Exception):
    """Stops work on the background thread (`Worker.polling_while`) once the polling thread failed."""


def every(items: Iterable, n: int, call: Callable[[], None]) -> Iterator:
    """`items`, calling `call` after every `n` of them."""
    for i, item in enumerate(items):
        yield item
        if i % n == n - 1:
            call()


def same_log(probe: KafkaConsumer, tp: TopicPartition, next_offset: int, last_event_id: str | None) -> bool:
    """Does the partition still hold, just before `next_offset`, the event we read last?

    End offsets are no help: tansu's ListOffsets answer can lag the log's real end, so the
    message itself is read (`probe` has auto_offset_reset="none": a position past the end raises).
    """
    if next_offset == 0:
        return True
    try:
        probe.assign([tp])
        if next_offset - 1 < probe.beginning_offsets([tp])[tp]:
            return False  # retention removed what we were about to read
        probe.seek(tp, next_offset - 1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for message in probe.poll(timeout_ms=500, max_records=1).get(tp, []):
                if message.offset != next_offset - 1:
                    return False
                if last_event_id is None:  # the last message read was poison: its offset alone tells
                    return True
                try:
                    return orjson.loads(message.value).get("event_id") == last_event_id
                except (orjson.JSONDecodeError, AttributeError, TypeError):
                    return False
        return False
    except OffsetOutOfRangeError:
        return False


def main() -> None:
    configure()
    settings = Settings()
    db = service_engine(settings, "scoring")
    # batches are written from a child process: on a thread, the write's Python would share this
    # process's interpreter lock with the engine (services/scoring/writer.py)
    writer = ProcessWriter(*settings.database("scoring"))
    writer.start()
    worker = Worker(settings, db, shipped(settings.scoring_policy), writer=writer)
    # the relay publishes from a child process: on a thread, its producer's Python would share
    # this process's interpreter lock with the engine (docs/performance.md)
    run_worker("scoring", worker, RelayProcess("services.scoring.relay", build_relay(settings, db)))


if __name__ == "__main__":
    main()


__all__ = ["GROUP", "Worker", "build_relay", "main", "partition_of", "same_log"]
