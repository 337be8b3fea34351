"""SIGKILL the ranking and the notify worker at random moments while events flow (the scoring
worker has its own test: tests/scoring/test_crash.py). Each killed worker is restarted at once;
at the end every score equals a clean recomputation, every standing ranks those scores, and the
receiver got every notification that should have been sent, each under one webhook-id.

Full form (KAOHE_CHAOS=1, `make chaos`): 20 kills of each during 50,000 events, SQLite and
PostgreSQL. Short form (`make test`): 3 kills of each during 3,000 events, SQLite.
"""

import random
import threading
import time

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from services.notify.models import ConsumerOffset as NotifyOffset
from services.ranking.models import ConsumerOffset as RankingOffset
from tests.chaos import report
from tests.chaos.harness import FULL, Pipeline, short_form_on_sqlite

pytestmark = [pytest.mark.broker, pytest.mark.e2e, pytest.mark.chaos]
EVENTS = 50_000 if FULL else 3_000
KILLS = 20 if FULL else 3
BATCH = 500 if FULL else 300
PAUSE_S = KILLS * 9.0 / (EVENTS / BATCH)  # the feed lasts about as long as the kill cycles (~8 s each)


def consumed(engine, model) -> int:
    with Session(engine) as s:
        return s.execute(select(func.coalesce(func.sum(model.next_offset), 0))).scalar_one()


def kill_repeatedly(pipeline: Pipeline, name: str, model, engine, kills: int, seed: int, at: list) -> None:
    """Wait until the worker is consuming, then SIGKILL it at a random moment of that work; restart."""
    rng = random.Random(seed)
    proc = pipeline.procs[name]
    for _ in range(kills):
        before, started = consumed(engine, model), time.monotonic()
        while consumed(engine, model) == before and time.monotonic() - started < 20:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        at.append(consumed(engine, model))
        proc.restart()


def test_ranking_and_notify_killed_at_random_moments_lose_and_double_nothing(database, tmp_path, access,
                                                                             own_broker):
    short_form_on_sqlite(database)
    with Pipeline(database, tmp_path, access, own_broker) as p:
        fed: list[int] = []
        fed_end: list[float] = []

        def feed() -> None:
            fed.append(p.feed(EVENTS, batch=BATCH, pause_s=PAUSE_S))
            fed_end.append(time.monotonic())

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        at_kill: dict[str, list[int]] = {"ranking": [], "notify": []}
        killers = [threading.Thread(target=kill_repeatedly, args=(p, "ranking", RankingOffset, p.ranking_db.engine,
                                                                  KILLS, 1, at_kill["ranking"])),
                   threading.Thread(target=kill_repeatedly, args=(p, "notify", NotifyOffset, p.notify_db.engine,
                                                                  KILLS, 2, at_kill["notify"]))]
        for k in killers:
            k.start()
        for k in killers:
            k.join(600)
        last_restart = time.monotonic()
        feeder.join(600)
        assert fed, "the feed did not finish"
        # recovery: from the last restart, or the feed's end if later, to everything matching
        recovery, check = p.wait_settled(max(last_restart, fed_end[0]), timeout=300 if FULL else 90)
        report.record(f"SIGKILL ranking + notify workers x{KILLS} each", database.backend, sent=fed[0],
                      lost=check.lost, doubled=check.doubled, recovery_s=recovery,
                      note=f"{check.notifications} notifications; {check.redelivered} re-sent under the same id")
        assert p.procs["ranking"].kills == p.procs["notify"].kills == KILLS
        final = {"ranking": consumed(p.ranking_db.engine, RankingOffset),
                 "notify": consumed(p.notify_db.engine, NotifyOffset)}
        for name, offsets in at_kill.items():  # the kills fell while that worker had work left
            assert offsets == sorted(offsets) and sum(0 < n < final[name] for n in offsets) >= KILLS - 1, (
                name, offsets, final[name])
        p.assert_consistent()
