"""Stop the broker during ingest, keep sending events, bring it back: everything must arrive
afterwards (scores equal a clean recomputation, standings rank them, and every notification that
should have been sent was sent, once).

Two outages:
  * frozen (SIGSTOP … SIGCONT): the broker is unreachable and comes back with its log, as a real
    Kafka cluster does after an outage. Intake keeps accepting events into its store; its relay
    publishes them once the broker answers again. In `make test` (8 s, SQLite) and in
    `make chaos` (30 s, SQLite and PostgreSQL).
  * log lost (stop … start): the local broker (tansu) keeps its log in memory only, so the broker
    that comes back is empty (it creates the services' topics as it starts, as make run's does).
    In `make chaos` (30 s, SQLite and PostgreSQL); its short form (8 s, SQLite) takes 40-50 s, more
    than make test can take: KAOHE_CHAOS_SHORT_OUTAGE=1 runs it.

Log lost, before 2026-12-03 (short form, SQLite): 1,483 lost, then 223 once scoring watched the
topic id: the restarted broker auto-created the score topic with 4 partitions and tansu kept
ranking's and notify's groups on their old 3 (they read nothing more: 13 stale scores, 210 critical
findings not notified), and ranking, rejoining, went back to its old-log offsets. Now the broker
creates the topics as it starts, ranking and notify store the topic id with their offsets, notify
catches up from intake's export, scoring sends its current scores again: three short runs on
SQLite, 3,000 events each, 0 lost, 0 doubled, recovered 13.2-22.0 s after the broker was back
(39-48 s a run); the full forms are in docs/reliability.md.
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
                    reason="the log-lost outage runs in make chaos (KAOHE_CHAOS=1); its short form takes 40-50 s, "
                    "more than make test can take: KAOHE_CHAOS_SHORT_OUTAGE=1 runs it")
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
