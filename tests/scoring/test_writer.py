"""The scoring worker's writer process (services/scoring/writer.py) fails the way the worker's loop
expects a write to fail: a database away is an OperationalError (the batch is written again), a
fenced write is `store.Stale` (the engine is rebuilt), a writer that died is `store.Stale` and the
next write starts another; and it does not outlive a worker killed with SIGKILL.

What it writes is tested with the worker's own tests (tests/scoring/test_store.py, "process")."""

import os
import signal
import subprocess
import sys
import textwrap
from collections import namedtuple
from dataclasses import replace

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from services.events import registry, topics
from services.scoring import store
from services.scoring.models import AppliedBatch, ScoreRow
from services.scoring.writer import ProcessWriter
from tests.scoring.factories import T0, finding, inspection
from tests.waiting import wait_for

Message = namedtuple("Message", "topic partition offset value headers")
COUNTY = "513431"  # one of the worker's counties (conftest.COUNTIES)


# tests/scoring/conftest.py's worker, its batches written by a child process
in_a_child = pytest.mark.parametrize("writer", ["process"], indirect=True)


def prepared(worker, offset: int, *findings: str) -> store.Prepared:
    """One poll of one inspection (its findings named), applied by the worker's engine."""
    r = inspection(*(finding(f) for f in findings), county=COUNTY)
    value = registry.encode_record(r.sequence, r.recorded_at, registry.to_json_dict(r.event))
    return worker._apply([Message(topics.INTAKE_EVENTS, 0, offset, value, [])])


def applied_batches(db) -> int:
    with Session(db) as s:
        return len(s.execute(select(AppliedBatch.id)).all())


def child(writer: ProcessWriter) -> int:
    (pid,) = writer.pool._processes  # the one process of its pool
    return pid


@in_a_child
def test_a_write_in_the_child_is_stored_and_answers_the_rows_it_changed(worker, scoring_db):
    changed = worker.persister.submit(prepared(worker, 0, "F-1")).result(timeout=60)
    assert changed == 2  # the county's score and its prefecture's
    assert applied_batches(scoring_db.engine) == 1
    assert child(worker.persister) != os.getpid()


@in_a_child
def test_a_fenced_write_is_stale_and_stores_nothing(worker, scoring_db):
    p = prepared(worker, 0, "F-1")
    p.fence = replace(p.fence, generation=p.fence.generation + 1)  # as if another worker recomputed meanwhile
    with pytest.raises(store.Stale, match="recomputed"):
        worker.persister.submit(p).result(timeout=60)
    assert applied_batches(scoring_db.engine) == 0


@in_a_child
def test_a_database_away_is_an_operational_error_and_the_worker_writes_the_batch_again(worker, scoring_db,
                                                                                       tmp_path):
    # the same worker's next write through a writer whose database cannot be reached
    good = worker.persister
    worker.persister = ProcessWriter(f"sqlite:///{tmp_path}/no-such-folder/scoring.db")
    try:
        worker.submit([Message(topics.INTAKE_EVENTS, 0, 0, encoded(inspection(finding("F-1"), county=COUNTY)),
                               [])])
        with pytest.raises(OperationalError, match="unable to open database file"):
            worker.settle()
    finally:
        worker.persister.close()
        worker.persister = good
    assert len(worker.unwritten) == 1 and applied_batches(scoring_db.engine) == 0
    worker.write_unwritten()  # what `run` does once the database answers
    assert applied_batches(scoring_db.engine) == 1
    with Session(scoring_db.engine) as s:
        assert s.get(ScoreRow, (COUNTY, T0.year)) is not None


def encoded(r) -> bytes:
    return registry.encode_record(r.sequence, r.recorded_at, registry.to_json_dict(r.event))


@in_a_child
def test_a_writer_that_died_is_stale_and_the_next_write_starts_another(worker, scoring_db):
    worker.persister.submit(prepared(worker, 0, "F-1")).result(timeout=60)
    first = child(worker.persister)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: worker.persister.pool._broken, timeout=30, what="the pool to see its process gone")
    with pytest.raises(store.Stale, match="writer process ended"):
        worker.persister.submit(prepared(worker, 1, "F-2")).result(timeout=60)
    assert applied_batches(scoring_db.engine) == 1  # the killed writer's batch is not stored
    # the worker would rebuild its engine from what is stored now; the writer starts afresh
    worker.persister.submit(prepared(worker, 2, "F-3")).result(timeout=60)
    assert child(worker.persister) != first
    assert applied_batches(scoring_db.engine) == 2


def test_the_writer_does_not_outlive_a_worker_killed_with_sigkill(tmp_path):
    script = textwrap.dedent(f"""
        import time
        from services.scoring.writer import ProcessWriter
        writer = ProcessWriter("sqlite:///{tmp_path}/scoring.db")
        writer.start()
        (pid,) = writer.pool._processes
        print(pid, flush=True)
        time.sleep(120)
    """)
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pid = None
    try:
        pid = int(worker.stdout.readline())
        assert alive(pid)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        wait_for(lambda: not alive(pid), timeout=10, what=f"the writer {pid} to end with its worker")
    finally:
        worker.kill()
        worker.wait(10)
        if pid is not None and alive(pid):  # the test failed: leave no orphan (it ignores SIGTERM)
            os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@in_a_child
def test_a_ctrl_c_to_the_process_group_leaves_the_writer_to_its_worker(worker, scoring_db):
    worker.persister.submit(prepared(worker, 0, "F-1")).result(timeout=60)
    pid = child(worker.persister)
    os.kill(pid, signal.SIGINT)
    os.kill(pid, signal.SIGTERM)
    worker.persister.submit(prepared(worker, 1, "F-2")).result(timeout=60)
    assert child(worker.persister) == pid
    assert applied_batches(scoring_db.engine) == 2
