"""A webhook receiver that is down (connection refused) for the first half of the run, then back
on the same port: every notification that should have been sent arrives, each under one
webhook-id, and scores and standings are unaffected.

Full form (KAOHE_CHAOS=1): 50,000 events, SQLite and PostgreSQL. Short form: 3,000, SQLite.
"""

import time

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from services.notify.models import Attempt
from tests.chaos import report
from tests.chaos.harness import FULL, Pipeline, short_form_on_sqlite

pytestmark = [pytest.mark.broker, pytest.mark.e2e, pytest.mark.chaos]
EVENTS = 50_000 if FULL else 3_000
BATCH = 500 if FULL else 300
PAUSE_S = 0.5


def test_receiver_down_for_the_first_half_gets_everything_once_afterwards(database, tmp_path, access, own_broker):
    short_form_on_sqlite(database)
    batches = -(-EVENTS // BATCH)
    back: dict[str, float] = {}

    def fault(i: int) -> None:
        if i == batches // 2 - 1:
            p.receiver.up()  # the second half: back on the same port
            back["up"] = time.monotonic()

    with Pipeline(database, tmp_path, access, own_broker) as p:
        warm = len(p.receiver.delivered())
        p.receiver.down()  # the first half: connection refused
        sent = p.feed(EVENTS, batch=BATCH, pause_s=PAUSE_S, after_batch=fault)
        refused_before = p.check()
        recovery, check = p.wait_settled(back["up"], timeout=300 if FULL else 90)
        report.record("webhook receiver down for the first half", database.backend, sent=sent, lost=check.lost,
                      doubled=check.doubled, recovery_s=recovery,
                      note=f"{check.notifications} notifications; {check.redelivered} re-sent under the same id")
        assert refused_before.notifications > warm  # there was something to deliver while it was down
        with Session(p.notify_db.engine) as s:  # and it was refused, then retried
            refused = s.execute(select(func.count()).select_from(Attempt).where(Attempt.delivered.is_(False))
                                ).scalar_one()
        assert refused > 0
        p.assert_consistent()
