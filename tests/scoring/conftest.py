"""Fixtures of the scoring worker's tests: its database on both backends, and a worker (no
consumer) over it, its batches written on a thread or (parameter "process") by a child process."""

from datetime import timedelta

import pytest
from sqlmodel import Session

from services.kit.settings import Settings
from services.scoring import store
from services.scoring.policy.model import shipped
from services.scoring.worker import Worker
from services.scoring.writer import ProcessWriter
from tests.conftest import fresh_database
from tests.scoring.factories import T0

COUNTIES = ("513431", "513432", "513433", "513434")


@pytest.fixture(params=["sqlite", "postgresql"])
def scoring_db(request, tmp_path):
    with fresh_database(request.param, tmp_path, "scoring") as db:
        yield db


@pytest.fixture
def writer(request, scoring_db):
    """Where the worker writes its batches: a thread of the test's process (the default), or, as
    `python -m services.scoring.worker` does, a child process (a test's parameter "process")."""
    if getattr(request, "param", "thread") == "thread":
        yield None
        return
    writer = ProcessWriter(scoring_db.url, scoring_db.schema)
    yield writer
    writer.close()


@pytest.fixture
def worker(scoring_db, clock, writer):
    """A worker (no consumer) owning every county (one partition), engine built, clock ticked."""
    with Session(scoring_db.engine) as s:
        store.save_counties(s, [{"code": c, "baseline_status": "in_poverty"} for c in COUNTIES])
        s.commit()
    clock.now = T0 + timedelta(hours=1)
    w = Worker(Settings(), scoring_db.engine, shipped(), clock=clock, writer=writer)
    w.restore()
    w.partitions, w.partition_count = frozenset({0}), 1
    w.tick()
    yield w
    w.close()
