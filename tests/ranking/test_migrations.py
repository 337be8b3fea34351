"""Ranking's 0003 adds the writers' sequence (its one row, from 0) to a database that holds
standings already; a worker writes on it; the downgrade drops it, keeping the standings. Both
backends."""

from datetime import datetime, timezone

import pytest
from sqlalchemy import inspect, select
from sqlmodel import Session

from services.ranking import store
from services.ranking.models import CurrentScore, Standing, WriteSequence
from tests.conftest import fresh_database, migrate

T0 = datetime(2027, 1, 10, tzinfo=timezone.utc)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path):
    with fresh_database(request.param, tmp_path, "ranking", migrated=False) as db:
        yield db


def score(code: str, total: float, message_id: int) -> store.ScoreMessage:
    return store.ScoreMessage(code, 2026, "county", "in_poverty", total, "good", "{}", message_id, T0)


def test_0003_adds_the_writers_sequence_to_standings_from_before_both_ways(empty_db):
    migrate("ranking", empty_db, "0002_ranking")
    with Session(empty_db.engine) as s:  # standings written by the release before (its tables are the same)
        s.add(CurrentScore(region_code="513431", year=2026, level="county", league="in_poverty", total=80.0,
                           grade="good", components="{}", message_id=1, as_of=T0))
        s.add(Standing(scope="513400", level="county", league="in_poverty", year=2026, region_code="513431",
                       rank=1, total=80.0, grade="good", changed_at=T0))
        s.commit()

    migrate("ranking", empty_db, "ranking@head")
    with Session(empty_db.engine) as s:
        assert s.execute(select(WriteSequence.id, WriteSequence.sequence)).all() == [(1, 0)]
        batch = store.Batch()
        batch.add(score("513432", 90.0, 2))
        store.write(s, batch, T0)
        s.commit()
        assert s.execute(select(WriteSequence.sequence)).scalar_one() == 1
        assert s.execute(select(Standing.region_code, Standing.rank).where(Standing.scope == "513400")
                         .order_by(Standing.rank)).all() == [("513432", 1), ("513431", 2)]

    migrate("ranking", empty_db, "0002_ranking", down=True)
    with Session(empty_db.engine) as s:
        assert "write_sequence" not in inspect(s.connection()).get_table_names(schema=empty_db.schema)
        # both counties in the prefecture and in the province
        assert len(s.execute(select(Standing.region_code)).all()) == 4
