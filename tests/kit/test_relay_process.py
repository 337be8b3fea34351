"""A worker's outbox relay as its child process (services/kit/relay_process.py), for real: scoring's
relay module publishing a scoring database's outbox to a local broker."""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from prometheus_client import REGISTRY
from sqlalchemy import func, select
from sqlmodel import Session

from bench.intake import child_pids
from services.events import topics
from services.kit.bulk import insert_rows
from services.kit.outbox import outbox_row
from services.kit.relay_process import PARENT, REPORT_FD, RelayProcess
from services.kit.settings import Settings
from services.scoring.base import Outbox
from services.scoring.relay import build
from tests.conftest import fresh_database
from tests.waiting import wait_for

pytestmark = pytest.mark.broker


def published(topic: str) -> float:
    return REGISTRY.get_sample_value("kaohe_outbox_published_total", {"service": "scoring", "topic": topic}) or 0.0


def add_rows(engine, first: int, n: int) -> None:
    now = datetime.now(timezone.utc)
    with Session(engine) as s:
        insert_rows(s, Outbox.__table__, [outbox_row(Outbox, topic=topics.SCORING_SCORES, key=f"5134{i:02d}",
                                                     value=b'{"n": %d}' % i, headers={"n": str(i)}, now=now)
                                          for i in range(first, first + n)])
        s.commit()


def unsent(engine) -> int:
    with Session(engine) as s:
        return s.execute(select(func.count()).select_from(Outbox).where(Outbox.sent_at.is_(None))).scalar_one()


def scoring_relay(db, tmp_path, broker, monkeypatch) -> RelayProcess:
    """Scoring's relay as a child process of this one (the test is its worker), on `db` and `broker`."""
    env = {"KAOHE_SCORING_DATABASE_URL": db.url, "KAOHE_DATA_DIR": str(tmp_path), "KAOHE_RELAY_IDLE_MS": "10",
           "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return RelayProcess("services.scoring.relay", build(Settings(), db.engine), first_wait=0.2)


@contextmanager
def running(relay: RelayProcess) -> Iterator[threading.Thread]:
    """`relay.run` on a thread (as `run_worker` runs it) until the block ends; then stopped and closed."""
    stop = threading.Event()
    runner = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    runner.start()
    try:
        yield runner
    finally:
        stop.set()
        runner.join(40)
        relay.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_relay_process_publishes_is_counted_here_restarts_and_stops(backend, tmp_path, own_broker, monkeypatch):
    with fresh_database(backend, tmp_path, "scoring") as db:
        relay = scoring_relay(db, tmp_path, own_broker, monkeypatch)
        before = published(topics.SCORING_SCORES)
        add_rows(db.engine, 0, 30)
        with running(relay) as runner:
            # the child publishes; this process counts what it reports
            wait_for(lambda: unsent(db.engine) == 0 and published(topics.SCORING_SCORES) == before + 30, timeout=30)
            first = relay.process
            # a child that dies is started again, and goes on with what came meanwhile
            first.kill()
            add_rows(db.engine, 30, 20)
            wait_for(lambda: relay.started == 2 and unsent(db.engine) == 0, timeout=30)
            wait_for(lambda: published(topics.SCORING_SCORES) == before + 50, timeout=30)
            assert first.poll() == -signal.SIGKILL and relay.process.poll() is None
        assert not runner.is_alive()
        assert relay.process.poll() == 0  # SIGTERM: it marked what it published and ended on its own
        consumer = KafkaConsumer(topics.SCORING_SCORES, bootstrap_servers=own_broker.bootstrap_servers,
                                 auto_offset_reset="earliest", enable_auto_commit=False)
        values: list[int] = []
        deadline = time.monotonic() + 30
        while len(values) < 50 and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                values += [int(m.value[6:-1]) for m in batch]
        values += [int(m.value[6:-1]) for batch in consumer.poll(timeout_ms=1000).values() for m in batch]  # any more
        consumer.close()
        assert sorted(values) == list(range(50))  # each row once: the killed child had marked its rows


def test_reports_arrive_in_a_worker_with_over_a_thousand_open_files(tmp_path, own_broker, monkeypatch):
    """The report pipe's descriptor is then numbered over 1024, which select.select refuses (the
    reports were lost: it happened in the test suite's own process)."""
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        with fresh_database("sqlite", tmp_path, "scoring") as db:
            relay = scoring_relay(db, tmp_path, own_broker, monkeypatch)
            before = published(topics.SCORING_SCORES)
            add_rows(db.engine, 0, 5)
            with running(relay):
                wait_for(lambda: published(topics.SCORING_SCORES) == before + 5, timeout=30)
    finally:
        for fd in held:
            os.close(fd)


def test_the_relay_process_dies_with_its_worker(tmp_path, own_broker):
    """SIGKILL of the worker takes its relay with it, as it took a relay thread: a restarted worker
    never finds an old relay still publishing."""
    with fresh_database("sqlite", tmp_path, "scoring") as db:
        env = {**os.environ, "KAOHE_SCORING_DATABASE_URL": db.url, "KAOHE_DATA_DIR": str(tmp_path),
               "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap_servers}
        worker = subprocess.Popen([sys.executable, "-c", (
            "import threading\n"
            "from services.kit.db import service_engine\n"
            "from services.kit.relay_process import RelayProcess\n"
            "from services.kit.settings import Settings\n"
            "from services.scoring.relay import build\n"
            "s = Settings()\n"
            "RelayProcess('services.scoring.relay', build(s, service_engine(s, 'scoring'))).run(threading.Event())\n")],
            env=env)
        add_rows(db.engine, 0, 1)
        try:
            wait_for(lambda: unsent(db.engine) == 0, timeout=30)  # the child is up and publishing
            (child,) = child_pids(worker.pid)
            worker.kill()
            worker.wait(10)
            wait_for(lambda: gone(child), timeout=10)
        finally:
            if worker.poll() is None:
                worker.kill()


def test_a_relay_process_that_can_no_longer_report_to_its_worker_stops(tmp_path, own_broker):
    """Where no death signal ends it (off Linux), a child whose worker went away stops at its next
    report: here the worker's end of the pipe is closed while the worker (this test) lives on."""
    with fresh_database("sqlite", tmp_path, "scoring") as db:
        read, write = os.pipe()
        child = subprocess.Popen([sys.executable, "-m", "services.scoring.relay"], pass_fds=(write,), env={
            **os.environ, "KAOHE_SCORING_DATABASE_URL": db.url, "KAOHE_DATA_DIR": str(tmp_path),
            "KAFKA_BOOTSTRAP_SERVERS": own_broker.bootstrap_servers, REPORT_FD: str(write), PARENT: str(os.getpid())})
        os.close(write)
        os.close(read)
        try:
            add_rows(db.engine, 0, 5)
            assert child.wait(60) == 0  # it published, could not report it, and stopped on its own
            assert unsent(db.engine) == 0  # having marked what it published
        finally:
            if child.poll() is None:
                child.kill()


def test_a_relay_process_whose_worker_is_gone_already_exits():
    done = subprocess.run([sys.executable, "-c", "from services.kit.relay_process import die_with_parent; "
                                                 "die_with_parent(1)"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "the worker 1 that started it is gone" in done.stderr


def gone(pid: int) -> bool:
    """Ended: no such process, or a zombie nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
