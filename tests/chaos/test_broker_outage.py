"""Stop the broker during ingest, keep sending events, bring it back: everything must arrive
afterwards (scores equal a clean recomputation, standings rank them, and every notification that
should have been sent was sent, once).

Two outages:
  * frozen (SIGSTOP … SIGCONT): the broker is unreachable and comes back with its log, as a real
    Kafka cluster does after an outage. Intake keeps accepting events into its store; its relay
    publishes them once the broker answers again. In `make test` (8 s, SQLite) and in
    `make chaos` (30 s, SQLite and PostgreSQL).
  * log lost (stop … start): the local broker (tansu) keeps its log in memory only, so the broker
    that comes back is empty. A known failure today (xfail; docs/reliability.md), run in
    `make chaos` only, or with KAOHE_CHAOS_SHORT_OUTAGE=1.

Measured 2026-11-22 (log lost, short form, SQLite): every event accepted while the broker was away (1,260 of
3,060) was never applied by scoring, and the notify worker missed their critical findings, because
a worker that stays up across the broker's restart keeps its fetch position (~420 per partition)
and reads the new log from there: the new log's head (the outage's backlog) is skipped. Scoring's
same-log check only runs on assignment, and its position survives without a reassignment.
Since scoring watches the topic id (it catches up from intake's export), the same run loses 223:
ranking misses 13 regions' latest scores and notify 210 critical findings, both read from the old
log's unread tail.
"""

import os
import signal
import time

import pytest

from tests.chaos import report
from tests.chaos.harness import FULL, Pipeline, short_form_on_sqlite

pytestmark = [pytest.mark.broker, pytest.mark.e2e, pytest.mark.chaos]
EVENTS = 50_000 if FULL else 3_000
BATCH = 500 if FULL else 300
OUTAGE_S = 30.0 if FULL else 8.0
PAUSE_S = 0.5


def test_broker_frozen_during_ingest_everything_arrives_afterwards(database, tmp_path, access, own_broker):
    short_form_on_sqlite(database)
    outage(database, tmp_path, access, own_broker, "broker unreachable {:.0f} s during ingest (log kept)",
           down=lambda: os.kill(own_broker.process.pid, signal.SIGSTOP),
           up=lambda: os.kill(own_broker.process.pid, signal.SIGCONT))


@pytest.mark.skipif(not FULL and os.environ.get("KAOHE_CHAOS_SHORT_OUTAGE") != "1",
                    reason="the log-lost outage runs in make chaos (KAOHE_CHAOS=1) while it is a known failure")
@pytest.mark.xfail(strict=True, reason="workers that stay up across a broker restart read the new log from "
                   "their old position and skip its head (the outage's backlog): docs/reliability.md")
def test_broker_stopped_during_ingest_everything_arrives_afterwards(database, tmp_path, access, own_broker):
    short_form_on_sqlite(database)
    outage(database, tmp_path, access, own_broker, "broker stopped {:.0f} s during ingest (log lost)",
           down=own_broker.stop, up=own_broker.start)  # gone with its log; back at the same address, empty


def outage(database, tmp_path, access, own_broker, label: str, *, down, up) -> None:
    batches = -(-EVENTS // BATCH)
    down_at = batches // 3  # after a third of the stream
    outage: dict[str, float] = {}
    accepted_while_down: list[int] = []

    def fault(i: int) -> None:
        if i == down_at:
            down()
            outage["down"] = time.monotonic()
        elif "down" in outage and "up" not in outage:
            accepted_while_down.append(i)
            if time.monotonic() - outage["down"] >= OUTAGE_S:
                up()
                outage["up"] = time.monotonic()

    with Pipeline(database, tmp_path, access, own_broker) as p:
        # a paced feed, slowed while the broker is down so that the outage spans several batches
        sent = p.feed(EVENTS, batch=BATCH, pause_s=PAUSE_S, after_batch=fault,
                      pause_for=lambda: (OUTAGE_S / 4) if "down" in outage and "up" not in outage else PAUSE_S)
        if "up" not in outage:
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage["down"])))
            up()
            outage["up"] = time.monotonic()
        recovery, check = p.wait_settled(outage["up"], timeout=180 if FULL else 60)
        report.record(label.format(OUTAGE_S), database.backend, sent=sent,
                      lost=check.lost, doubled=check.doubled, recovery_s=recovery,
                      note=f"{check.notifications} notifications; recovery from broker back")
        assert accepted_while_down, "intake accepted nothing while the broker was down"
        p.assert_consistent()
