"""`store.write` re-ranks every scope a batch touches with a few reads per (year, level, league):
after any sequence of batches the standings equal the ranks computed afresh from the latest
scores, and the history names exactly the standings that changed. Both backends."""

import random
from collections.abc import Iterator
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


def random_batch(rng: random.Random, step: int, message_id: int) -> store.Batch:
    """Scores of some counties and prefectures, message ids from `message_id` + 1 on."""
    batch = store.Batch()
    regions = rng.sample(COUNTIES, rng.randint(1, len(COUNTIES))) + rng.sample(PREFECTURES, rng.randint(0, 3))
    for code in regions:
        message_id += 1
        county = code in COUNTIES
        batch.add(store.ScoreMessage(
            code, rng.choice([2026, 2027]), "county" if county else "prefecture",
            rng.choice(LEAGUES) if county else ALL, rng.choice([61.5, 70.0, 80.25, 80.25, 93.0]),
            rng.choice(["good", "average"]), "{}", message_id, T0 + timedelta(minutes=step)))
    return batch


def batches(rng: random.Random, steps: int) -> Iterator[tuple[int, store.Batch, dict]]:
    """(step, batch, the latest score of every region-year so far) for `steps` random batches."""
    latest: dict[tuple[str, int], store.ScoreMessage] = {}
    message_id = 0
    for step in range(steps):
        batch = random_batch(rng, step, message_id)
        message_id += len(batch.scores)
        latest.update(batch.scores)
        yield step, batch, latest


def write(engine, batch: store.Batch, step: int, cache: store.Cache | None) -> list[dict]:
    with Session(engine) as s:
        history = store.write(s, batch, T0 + timedelta(minutes=step), cache)
        s.commit()
    if cache is not None:
        cache.committed()
    return history


@pytest.mark.parametrize("kept", [None, store.KEEP_YEARS, 1], ids=["read", "kept", "one-year-kept"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_standings_after_any_batches_equal_ranks_computed_afresh(ranking_db, seed, kept):
    """Read from the database for each batch, or kept by the worker between batches (`Cache`):
    all the years the batches write (two), or only the one written last (the other read again)."""
    cache = store.Cache(keep_years=kept) if kept else None
    for step, batch, latest in batches(random.Random(seed), 8):
        with Session(ranking_db.engine) as s:
            before = snapshot(s)
        history = write(ranking_db.engine, batch, step, cache)
        if cache is not None:
            assert len(cache.years) <= kept
        with Session(ranking_db.engine) as s:
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


@pytest.mark.parametrize("seed", [4, 5])
def test_workers_sharing_a_database_each_see_the_others_writes(ranking_db, seed):
    """Two workers' caches, writing in turns at random (scale-out): each notices the other wrote
    (the sequence moved past its own last write) and reads the years again."""
    rng = random.Random(seed)
    caches = [store.Cache(), store.Cache()]
    for step, batch, latest in batches(rng, 12):
        write(ranking_db.engine, batch, step, rng.choice(caches))
        with Session(ranking_db.engine) as s:
            assert snapshot(s) == afresh(latest), f"step {step}"


def test_a_write_rolled_back_is_not_kept(ranking_db):
    """A batch whose transaction did not commit leaves the cache unknown: the next write reads the
    years again, and the rolled-back scores rank nowhere."""
    rng = random.Random(6)
    cache = store.Cache()
    first = random_batch(rng, 0, 0)
    write(ranking_db.engine, first, 0, cache)
    lost = random_batch(rng, 1, 1000)
    with Session(ranking_db.engine) as s:
        store.write(s, lost, T0 + timedelta(minutes=1), cache)
        s.rollback()
    assert cache.count is None
    last = random_batch(rng, 2, 2000)
    write(ranking_db.engine, last, 2, cache)
    with Session(ranking_db.engine) as s:
        assert snapshot(s) == afresh({**first.scores, **last.scores})
