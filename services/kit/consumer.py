"""Consumers whose offsets live in the service's own database (effectively once).

Kafka's committed offsets are never used: on assignment the consumer is placed at the offsets
the service stored in the same transaction as its state.
"""

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaError, KafkaTimeoutError, OffsetOutOfRangeError
from sqlalchemy.exc import DBAPIError, OperationalError

from services.kit import heap, metrics, records
from services.kit.settings import Settings

log = logging.getLogger(__name__)

LEAVE_TIMEOUT_MS = 1_000


class _OnAssigned(ConsumerRebalanceListener):
    """Calls `on_assigned(partitions)`, which seeks each to its stored offset. If the database is
    away during the rebalance (an outage longer than the poll interval makes one), the partitions
    are paused where no message is read and placed again by the next `poll_ordered` (whose database
    error the worker's loop backs off on): an exception here would leave poll() as a KafkaError
    and end the worker process."""

    def __init__(self, on_assigned: Callable) -> None:
        self.on_assigned = on_assigned
        self.consumer: KafkaConsumer | None = None
        self.pending: set = set()  # assigned, but not placed yet: paused

    def on_partitions_revoked(self, revoked):  # state is committed per batch: nothing pending
        self.pending -= set(revoked)

    def on_partitions_assigned(self, assigned):
        try:
            self.on_assigned(assigned)
            self.pending = set()
        except (OperationalError, DBAPIError) as exc:
            log.warning("database unavailable while placing %d assigned partitions (%s): paused until it is back",
                        len(assigned), str(exc).splitlines()[0])
            self.pending = set(assigned)
            for tp in assigned:
                self.consumer.seek(tp, 0)  # a position, so poll() does not look for one; paused: never read
            self.consumer.pause(*assigned)

    def place_pending(self) -> None:
        """Place the partitions a rebalance could not (raises the database's error while it is away)."""
        if not self.pending:
            return
        pending = self.pending & set(self.consumer.assignment())
        if pending:
            self.on_assigned(pending)
            self.consumer.resume(*pending)
            log.info("placed %d partitions assigned while the database was away", len(pending))
        self.pending = set()


def group_consumer(settings: Settings, *, group: str, topics: list[str], batch: int,
                   on_assigned: Callable) -> KafkaConsumer:
    """A consumer in `group` on `topics`; `on_assigned(partitions)` must seek every partition."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers.split(","), group_id=group, client_id=group,
        # on_assigned places every partition; a position past the log's end raises
        enable_auto_commit=False, auto_offset_reset="none", max_poll_records=batch,
        # a group join lasts about max_poll_interval_ms (the rebalance timeout): keep it short
        max_poll_interval_ms=settings.consumer_max_poll_interval_ms,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,  # a message is read when it arrives
        heartbeat_interval_ms=min(3_000, settings.consumer_session_timeout_ms // 3),
        group_instance_id=settings.consumer_instance_id,
    )
    records.install(consumer)
    listener = _OnAssigned(on_assigned)
    listener.consumer = consumer
    consumer.kaohe_listener = listener  # for poll_ordered
    consumer.subscribe(topics, listener=listener)
    return consumer


def poll_ordered(consumer: KafkaConsumer, batch: int, timeout_ms: int = 200) -> list:
    """One poll's messages, partition by partition, in offset order within each (first placing
    partitions a rebalance assigned while the database was away: its error is the caller's to back off on)."""
    listener = getattr(consumer, "kaohe_listener", None)
    if listener is not None:
        listener.place_pending()
    polled = consumer.poll(timeout_ms=timeout_ms, max_records=batch)
    record_poll(consumer, polled)
    return [m for tp in sorted(polled, key=lambda t: t.partition) for m in polled[tp]]


_lag_series: dict[str, set[tuple[str, str]]] = {}  # per group: the (topic, partition) lag gauges set


def record_poll(consumer: KafkaConsumer, polled: dict) -> None:
    """Messages consumed, and the lag of every assigned partition as this poll left it.

    From what the consumer already knows (the highwater of its last fetch, its position): no
    request to the broker. Partitions no longer assigned (a rebalance) lose their gauge here.
    """
    group = consumer.config.get("group_id") or "none"
    per_topic: dict[str, int] = {}
    for tp, messages in polled.items():
        per_topic[tp.topic] = per_topic.get(tp.topic, 0) + len(messages)
    for topic, n in per_topic.items():
        metrics.CONSUMER_MESSAGES.labels(group, topic).inc(n)
    current: set[tuple[str, str]] = set()
    for tp in consumer.assignment():
        try:
            highwater = consumer.highwater(tp)
            # timeout 0: a position not known yet (awaiting a reset) is skipped, never waited for
            position = consumer.position(tp, timeout_ms=0) if highwater is not None else None
        except KafkaError:
            continue
        if position is None:
            continue
        key = (tp.topic, str(tp.partition))
        metrics.CONSUMER_LAG.labels(group, *key).set(max(0, highwater - position))
        current.add(key)
    for key in _lag_series.get(group, set()) - current:
        try:
            metrics.CONSUMER_LAG.remove(group, *key)
        except KeyError:
            pass
    _lag_series[group] = current


def leave(consumer: KafkaConsumer, timeout_ms: int = LEAVE_TIMEOUT_MS) -> None:
    """Close `consumer`, which asks to leave its group, waiting at most `timeout_ms` for the answer.

    The local broker (tansu 0.6) answers a LeaveGroup of a worker of the running stack only after
    3-5 s (Apache Kafka at once), and kafka-python's close waits for it up to its request timeout
    (30 s): every stop of `make run` took 6 s. The request is sent either way and the broker acts on
    it; kafka-python's ERROR for the unanswered request is replaced by an INFO line here.
    """
    unanswered = _Unanswered()
    coordinator = logging.getLogger("kafka.coordinator")
    coordinator.addFilter(unanswered)
    try:
        consumer.close(timeout_ms=timeout_ms)
    finally:
        coordinator.removeFilter(unanswered)
    if unanswered.seen:
        log.info("left group %s without the broker's answer within %d ms (sent; not waited for)",
                 consumer.config["group_id"], timeout_ms)


class _Unanswered(logging.Filter):
    """Drops kafka-python's "LeaveGroup request failed" when it only timed out (`leave`)."""

    seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("LeaveGroup request failed") and any(
                isinstance(a, KafkaTimeoutError) for a in record.args or ()):
            self.seen = True
            return False
        return True


class Backoff:
    """Waits that double from `first` to `cap` while something (a database, a service) is away."""

    def __init__(self, first: float = 0.5, cap: float = 10.0) -> None:
        self.first, self.cap, self.delay = first, cap, first

    def reset(self) -> None:
        self.delay = self.first

    def wait(self, stop: threading.Event, what: str, exc: BaseException) -> None:
        log.warning("%s unavailable (%s); retrying in %.1fs", what, str(exc).splitlines()[0], self.delay)
        stop.wait(self.delay)
        self.delay = min(self.delay * 2, self.cap)


def log_id(consumer: KafkaConsumer, topic: str) -> str | None:
    """The Kafka topic id of `topic` as the consumer's metadata has it (None: not known yet)."""
    topic_id = consumer._client.cluster.topic_id(topic)  # kafka-python keeps ids from metadata responses here
    return None if topic_id is None else str(topic_id)


class LogWatch:
    """The identity (Kafka topic id) of each assigned topic's log, as this consumer last saw it.

    A broker that lost its log (tansu keeps nothing on restart) recreates the topics with new ids.
    A consumer that stayed in its group keeps its positions, which then point into the new log
    (its head would be skipped): a changed id says so (`replaced`). A consumer placed at offsets
    stored for the old log (a restart, a rebalance) would do the same: the id stored with the
    offsets says so (`place`). `ids` is what a worker stores with the offsets it commits.
    """

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self.found: set[str] = set()  # placed from their start by `place`: reported by the next `replaced`

    def place(self, consumer: KafkaConsumer, partitions, stored: dict[tuple[str, int], tuple[int, str | None]]
              ) -> None:
        """Seek each partition to its stored (offset, topic id), or to its log's start if nothing is
        stored or the offset was stored for another log than the one the consumer sees now (an
        unknown id on either side: the offset is trusted, as before ids were stored)."""
        for tp in partitions:
            now = log_id(consumer, tp.topic)
            if now is not None:
                self.ids[tp.topic] = now
            offset, stored_id = stored.get((tp.topic, tp.partition), (None, None))
            if offset is None:
                consumer.seek_to_beginning(tp)
            elif stored_id is not None and now is not None and stored_id != now:
                log.warning("%s[%d]: offset %d was stored for another log (topic id %s, now %s): reading it "
                            "from the start", tp.topic, tp.partition, offset, stored_id, now)
                consumer.seek_to_beginning(tp)
                self.found.add(tp.topic)
            else:
                consumer.seek(tp, offset)

    def replaced(self, consumer: KafkaConsumer) -> set[str]:
        """Topics whose log was replaced since the last call: their id changed (a first sighting is
        remembered), or `place` found their stored offsets were for another log."""
        out, self.found = self.found, set()
        for topic in {tp.topic for tp in consumer.assignment()}:
            now = log_id(consumer, topic)
            if now is None:
                continue
            if self.ids.setdefault(topic, now) != now:
                out.add(topic)
                self.ids[topic] = now
        return out


@contextmanager
def paused(consumer: KafkaConsumer) -> Iterator[Callable[[], None]]:
    """For long work between polls (a catch-up): every assigned partition is paused and the returned
    function, called now and then, polls without reading, so that the group keeps this worker
    (max.poll.interval). What a partition assigned meanwhile returns is read again afterwards."""
    stopped = set(consumer.assignment()) - set(consumer.paused())
    consumer.pause(*stopped)
    last = [time.monotonic()]

    def meanwhile() -> None:
        if time.monotonic() - last[0] < 1.0:
            return
        last[0] = time.monotonic()
        for tp, read in consumer.poll(timeout_ms=0).items():
            consumer.seek(tp, read[0].offset)

    try:
        yield meanwhile
    finally:
        consumer.resume(*(stopped & set(consumer.assignment())))


def consume(stop: threading.Event, worker, batch: int, *, connect: Callable[[], None] | None = None,
            every_poll: Callable[[], None] | None = None) -> None:
    """The loop of a worker that keeps its state and offsets in its database and drops what it has
    seen by id: poll, `worker.handle(messages)`, `every_poll()`, until `stop`.

    The worker has `consumer` (None until `connect()`, default `worker.connect`), `handle`,
    `seek_stored(partitions)` (through `worker.logs.place`), `logs` (a LogWatch) and
    `log_replaced(topics)`. The broker lost the log (tansu keeps nothing on restart) →
    `log_replaced(topics)` (what the old log held and the worker had not read yet is gone: it
    catches up from elsewhere, or does nothing), then the new log is read from its start (the
    worker drops what it has already seen). Detected by a new topic id while the consumer stayed
    in place (its position would otherwise skip the new log's head) or offsets stored for another
    log. A position past the log's end (retention) → the log is read from its start. The database
    is away → back off, then return to the stored offsets.
    """
    backoff = Backoff()
    watch = worker.logs
    while not stop.is_set():
        try:
            if worker.consumer is None:
                (connect or worker.connect)()
            messages = poll_ordered(worker.consumer, batch)
            replaced = watch.replaced(worker.consumer)
            if replaced:
                # this poll may have read the new log from our old position: drop it and reread
                log.warning("topics %s were recreated (the broker lost its log): reading them from the start",
                            sorted(replaced))
                assigned = worker.consumer.assignment()
                worker.consumer.seek_to_beginning(*[tp for tp in assigned if tp.topic in replaced])
                if others := {tp for tp in assigned if tp.topic not in replaced}:
                    worker.seek_stored(others)
                worker.log_replaced(replaced)
                continue
            if messages:
                worker.handle(messages)
            if every_poll is not None:
                every_poll()
            backoff.reset()
        except OffsetOutOfRangeError as exc:
            # retention overtook a stopped worker (a lost log is told by its topic id, above): what
            # expired is not caught up (webhooks weeks late, docs/operations.md). The error names
            # the partitions; any other form: every assigned one
            out = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
            partitions = set(out) & worker.consumer.assignment() or worker.consumer.assignment()
            log.warning("offsets out of range %s: reading the log from its start", exc)
            worker.consumer.seek_to_beginning(*partitions)
        except (OperationalError, DBAPIError) as exc:
            backoff.wait(stop, "database", exc)
            if worker.consumer is not None:
                try:
                    worker.seek_stored(worker.consumer.assignment())
                except (OperationalError, DBAPIError):
                    pass


def run_worker(name: str, worker, relay) -> None:
    """A worker process's main loop: `worker.run(stop)` on this thread, its outbox relay on another
    (with its own producer), both stopped by SIGINT/SIGTERM; /metrics on the process's metrics port
    (KAOHE_METRICS_PORT, default by `name`: see Settings.metrics_port_for)."""
    settings = getattr(worker, "settings", None) or Settings()
    heap.tune()
    server = metrics.serve_for(settings, f"{name}-worker")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    relay_thread = threading.Thread(target=relay.run, args=(stop,), name=f"{name}-relay", daemon=True)
    relay_thread.start()
    try:
        worker.run(stop)
    finally:
        stop.set()
        worker.close()
        relay_thread.join(15)
        relay.close()
        metrics.stop(server)
        log.info("%s worker stopped", name)


__all__ = ["Backoff", "LogWatch", "consume", "group_consumer", "leave", "log_id", "paused", "poll_ordered",
           "record_poll", "run_worker"]
