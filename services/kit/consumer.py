"""Consumers whose offsets live in the service's own database (effectively once).

Kafka's committed offsets are never used: on assignment the consumer is placed at the offsets
the service stored in the same transaction as its state.
"""

import logging
import signal
import threading
from collections.abc import Callable

from kafka import ConsumerRebalanceListener, KafkaConsumer

from services.kit.settings import Settings

log = logging.getLogger(__name__)


class _OnAssigned(ConsumerRebalanceListener):
    def __init__(self, on_assigned: Callable) -> None:
        self.on_assigned = on_assigned

    def on_partitions_revoked(self, revoked):  # state is committed per batch: nothing pending
        pass

    def on_partitions_assigned(self, assigned):
        self.on_assigned(assigned)


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
        heartbeat_interval_ms=min(3_000, settings.consumer_session_timeout_ms // 3),
        group_instance_id=settings.consumer_instance_id,
    )
    consumer.subscribe(topics, listener=_OnAssigned(on_assigned))
    return consumer


def poll_ordered(consumer: KafkaConsumer, batch: int, timeout_ms: int = 200) -> list:
    """One poll's messages, partition by partition, in offset order within each."""
    polled = consumer.poll(timeout_ms=timeout_ms, max_records=batch)
    return [m for tp in sorted(polled, key=lambda t: t.partition) for m in polled[tp]]




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


def run_worker(name: str, worker, relay) -> None:
    """A worker process's main loop: `worker.run(stop)` on this thread, its outbox relay on another
    (with its own producer), both stopped by SIGINT/SIGTERM."""
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
        log.info("%s worker stopped", name)


__all__ = ["Backoff", "group_consumer", "poll_ordered", "run_worker"]
