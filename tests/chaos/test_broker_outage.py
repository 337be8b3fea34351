"""Stop the broker during ingest, keep sending events, start it again.

The local broker (tansu) keeps its log in memory only, so the broker that comes back is empty:
this is the harder case of an outage (a real Kafka cluster comes back with its log). Intake keeps
accepting events into its store while the broker is away; its relay publishes them once the
broker is back; the workers find their stored offsets belong to a log that is gone. Everything
must arrive afterwards: scores equal a clean recomputation, standings rank them, and every
notification that should have been sent was sent, once.

Full form (KAOHE_CHAOS=1): 30 s without a broker during 50,000 events, SQLite and PostgreSQL.
Short form: 8 s during 3,000 events, SQLite, but only when KAOHE_CHAOS_SHORT_OUTAGE=1: it fails
today (see the xfail below and docs/reliability.md) and a failing run waits out its timeout.

Measured 2026-11-22 (short form, SQLite): every event accepted while the broker was away (1,260 of
3,060) was never applied by scoring, and the notify worker missed their critical findings, because
a worker that stays up across the broker's restart keeps its fetch position (~420 per partition)
and reads the new log from there: the new log's head (the outage's backlog) is skipped. Scoring's
same-log check only runs on assignment, and its position survives without a reassignment.
"""

import os
import time

import pytest

from tests.chaos import report
from tests.chaos.harness import FULL, Pipeline, short_form_on_sqlite

pytestmark = [
    pytest.mark.broker, pytest.mark.e2e, pytest.mark.chaos,
    pytest.mark.skipif(not FULL and os.environ.get("KAOHE_CHAOS_SHORT_OUTAGE") != "1",
                       reason="broker outage runs in make chaos (KAOHE_CHAOS=1) while it is a known failure"),
    pytest.mark.xfail(strict=True, reason="workers that stay up across a broker restart read the new log from "
                      "their old position and skip its head (the outage's backlog): docs/reliability.md"),
]
EVENTS = 50_000 if FULL else 3_000
BATCH = 500 if FULL else 300
OUTAGE_S = 30.0 if FULL else 8.0
PAUSE_S = 0.5


def test_broker_stopped_during_ingest_everything_arrives_afterwards(database, tmp_path, access, own_broker):
    short_form_on_sqlite(database)
    batches = -(-EVENTS // BATCH)
    down_at = batches // 3  # after a third of the stream
    outage: dict[str, float] = {}
    accepted_while_down: list[int] = []

    def fault(i: int) -> None:
        if i == down_at:
            own_broker.stop()  # gone, with its log
            outage["down"] = time.monotonic()
        elif "down" in outage and "up" not in outage:
            accepted_while_down.append(i)
            if time.monotonic() - outage["down"] >= OUTAGE_S:
                own_broker.start()  # the same address, an empty log
                outage["up"] = time.monotonic()

    with Pipeline(database, tmp_path, access, own_broker) as p:
        # a paced feed, slowed while the broker is down so that the outage spans several batches
        sent = p.feed(EVENTS, batch=BATCH, pause_s=PAUSE_S, after_batch=fault,
                      pause_for=lambda: (OUTAGE_S / 4) if "down" in outage and "up" not in outage else PAUSE_S)
        if "up" not in outage:
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage["down"])))
            own_broker.start()
            outage["up"] = time.monotonic()
        recovery, check = p.wait_settled(outage["up"], timeout=180 if FULL else 60)
        report.record(f"broker stopped {OUTAGE_S:.0f} s during ingest (log lost)", database.backend, sent=sent,
                      lost=check.lost, doubled=check.doubled, recovery_s=recovery,
                      note=f"{check.notifications} notifications; recovery from broker back")
        assert accepted_while_down, "intake accepted nothing while the broker was down"
        p.assert_consistent()
