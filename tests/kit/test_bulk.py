"""kit.bulk.insert_rows stores exactly what SQLAlchemy's own insert stores, on both backends."""

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from services.kit.bulk import insert_rows
from services.scoring.models import AppliedEvent, Explanation
from tests.conftest import fresh_database

BEIJING = timezone(timedelta(hours=8))


@pytest.fixture(params=["sqlite", "postgresql"])
def scoring_db(request, tmp_path):
    with fresh_database(request.param, tmp_path, "scoring") as db:
        yield db


def rows(n: int, first: int) -> tuple[list[dict], list[dict]]:
    at = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=BEIJING)
    applied = [{"event_id": uuid.uuid4(), "sequence": first + i, "region_code": "513431", "record": f"{{\"n\": {i}}}"}
               for i in range(n)]
    lines = [{"region_code": "513431", "year": 2026, "component": "inspections", "points": -1.25, "rule": "r",
              "cause": str(a["event_id"]), "policy_id": "default-v1", "at": at + timedelta(hours=i)}
             for i, a in enumerate(applied)]
    return applied, lines


def test_rows_read_back_as_written_and_stored_as_sqlalchemy_stores_them(scoring_db):
    fast_applied, fast_lines = rows(3, 1)
    orm_applied, orm_lines = rows(3, 100)
    with Session(scoring_db.engine) as s:
        insert_rows(s, AppliedEvent.__table__, fast_applied)
        insert_rows(s, Explanation.__table__, fast_lines)
        s.execute(insert(AppliedEvent.__table__), orm_applied)
        s.execute(insert(Explanation.__table__), orm_lines)
        s.commit()
    with Session(scoring_db.engine) as s:
        applied = {r.sequence: r for r in s.execute(select(AppliedEvent)).scalars()}
        lines = {r.cause: r for r in s.execute(select(Explanation)).scalars()}
        # the raw stored forms (a UUID's text on SQLite, a timestamp's), as the database holds them
        raw_ids = dict(s.execute(text("SELECT sequence, CAST(event_id AS TEXT) FROM applied_event")).all())
        raw_at = dict(s.execute(text("SELECT cause, CAST(at AS TEXT) FROM explanation")).all())
    for row in fast_applied + orm_applied:
        got = applied[row["sequence"]]
        assert (got.event_id, got.region_code, got.record) == (row["event_id"], row["region_code"], row["record"])
    for row in fast_lines + orm_lines:
        got = lines[row["cause"]]
        assert got.at == row["at"] and got.at.utcoffset() == timedelta(0)
        assert (got.points, got.year, got.policy_id) == (row["points"], row["year"], row["policy_id"])
    # same shapes either way: what the fast path stored cannot be told from what SQLAlchemy stored
    shape = {len(v) for v in raw_ids.values()}
    assert len(shape) == 1, raw_ids
    assert {len(raw_at[r["cause"]]) for r in fast_lines} == {len(raw_at[r["cause"]]) for r in orm_lines}


def test_no_rows_is_no_statement(scoring_db):
    with Session(scoring_db.engine) as s:
        insert_rows(s, AppliedEvent.__table__, [])
        s.commit()
        assert s.execute(select(AppliedEvent)).first() is None


def test_a_violated_constraint_is_sqlalchemys_error_and_the_transaction_rolls_back(scoring_db):
    """On PostgreSQL the rows go through COPY, past SQLAlchemy: its errors must still be SQLAlchemy's
    (callers catch IntegrityError / DBAPIError), and nothing of the failed transaction stays."""
    applied, _ = rows(2, 1)
    with Session(scoring_db.engine) as s:
        insert_rows(s, AppliedEvent.__table__, applied[:1])
        s.commit()
    with Session(scoring_db.engine) as s:
        with pytest.raises(IntegrityError):
            insert_rows(s, AppliedEvent.__table__, [applied[1], applied[0]])  # the second is already stored
        s.rollback()
        assert [r.sequence for r in s.execute(select(AppliedEvent)).scalars()] == [1]
        insert_rows(s, AppliedEvent.__table__, applied[1:])  # the session is usable again
        s.commit()
    with Session(scoring_db.engine) as s:
        assert sorted(r.sequence for r in s.execute(select(AppliedEvent)).scalars()) == [1, 2]
