"""`store.write` re-ranks every scope a batch touches with a few reads per (year, level, league):
after any sequence of batches the standings equal the ranks computed afresh from the latest
scores, and the history names exactly the standings that changed. Both backends."""

import random
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlmodel import Session

from services.ranking import store
from services.ranking.models import Standing
from services.ranking.ranks import ALL, LEAGUES, rank, scopes
from tests.conftest import fresh_database

# three provinces; prefectures of several sizes; ties come from a few possible totals
PREFECTURES = ["130100", "130200", "510100", "513400", "513300", "650100"]
COUNTIES = [p[:4] + f"{n:02d}" for p in PREFECTURES for n in range(1, 2 + PREFECTURES.index(p) % 3 * 3)]
T0 = datetime(2027, 1, 10, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "postgresql"])
def ranking_db(request, tmp_path):
    with fresh_database(request.param, tmp_path, "ranking") as db:
        yield db


def snapshot(session: Session) -> dict[tuple, tuple]:
    rows = session.execute(select(Standing.scope, Standing.level, Standing.league, Standing.year,
                                  Standing.region_code, Standing.rank, Standing.total, Standing.grade)).all()
    return {tuple(r[:5]): tuple(r[5:]) for r in rows}


def afresh(latest: dict[tuple[str, int], store.ScoreMessage]) -> dict[tuple, tuple]:
    """The standings of every scope, ranked from scratch."""
    members: dict[tuple, list] = {}
    for s in latest.values():
        for scope in scopes(s.region_code, s.level, s.league, s.year):
            members.setdefault((scope.scope, scope.level, scope.league, scope.year), []).append(
                (s.region_code, s.total, s.grade))
    return {(*key, r.region_code): (r.rank, r.total, r.grade) for key, entries in members.items()
            for r in rank(entries)}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_standings_after_any_batches_equal_ranks_computed_afresh(ranking_db, seed):
    rng = random.Random(seed)
    latest: dict[tuple[str, int], store.ScoreMessage] = {}
    message_id = 0
    for step in range(8):
        batch = store.Batch()
        regions = rng.sample(COUNTIES, rng.randint(1, len(COUNTIES))) + rng.sample(PREFECTURES, rng.randint(0, 3))
        for code in regions:
            message_id += 1
            county = code in COUNTIES
            score = store.ScoreMessage(
                code, rng.choice([2026, 2027]), "county" if county else "prefecture",
                rng.choice(LEAGUES) if county else ALL, rng.choice([61.5, 70.0, 80.25, 80.25, 93.0]),
                rng.choice(["good", "average"]), "{}", message_id, T0 + timedelta(minutes=step))
            batch.add(score)
            latest[(code, score.year)] = score
        with Session(ranking_db.engine) as s:
            before = snapshot(s)
            history = store.write(s, batch, T0 + timedelta(minutes=step))
            s.commit()
            after = snapshot(s)
        assert after == afresh(latest), f"step {step}"
        moved = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
        named = {(h["scope"], h["level"], h["league"], h["year"], h["region_code"]) for h in history}
        assert named == moved and len(history) == len(moved), f"step {step}"
        for h in history:
            key = (h["scope"], h["level"], h["league"], h["year"], h["region_code"])
            assert (h["previous_rank"], h["previous_total"]) == (before[key][:2] if key in before else (None, None))
            assert (h["rank"], h["total"], h["grade"]) == (after.get(key) or (None, None, None))
        order = [(h["year"], h["level"], h["league"], h["scope"]) for h in history]
        assert order == sorted(order)  # by scope, as the standing messages go out
