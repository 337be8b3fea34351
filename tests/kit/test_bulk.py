"""kit.bulk.insert_rows and upsert_rows store exactly what SQLAlchemy's own insert and upsert store,
on both backends."""

import math
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session

from services.intake.store.models import StoredEvent
from services.kit import bulk
from services.kit.bulk import insert_rows, upsert_rows
from services.kit.upsert import upsert
from services.scoring.models import AppliedBatch, ConsumerOffset, ScoreRow
from tests.conftest import fresh_database

BEIJING = timezone(timedelta(hours=8))


@pytest.fixture(params=["sqlite", "postgresql"])
def intake_db(request, tmp_path):
    """Intake's tables: a UUID, timestamps and a unique constraint, as SQLAlchemy's types store them."""
    with fresh_database(request.param, tmp_path, "intake") as db:
        yield db


@pytest.fixture(params=["copy", "insert"])
def rows_as(request, monkeypatch):
    """On PostgreSQL insert_rows COPYs many rows and INSERTs a few: each test takes both ways (on
    SQLite both are an INSERT)."""
    monkeypatch.setattr(bulk, "COPY_FROM", 1 if request.param == "copy" else 10**9)
    return request.param


def rows(n: int, first: int) -> list[dict]:
    at = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=BEIJING)
    return [{"sequence": first + i, "event_id": uuid.uuid4(), "type": "daily_check.recorded", "schema_version": 1,
             "occurred_at": at + timedelta(hours=i), "recorded_at": at + timedelta(hours=i, seconds=1),
             "region_code": "513431", "prefecture_code": "513400", "source": "test", "body": f"{{\"n\": {i}}}",
             "content_hash": "c" * 64, "chain_hash": "h" * 64} for i in range(n)]


def test_rows_read_back_as_written_and_stored_as_sqlalchemy_stores_them(intake_db, rows_as):
    fast, orm = rows(3, 1), rows(3, 100)
    with Session(intake_db.engine) as s:
        insert_rows(s, StoredEvent.__table__, fast)
        s.execute(insert(StoredEvent.__table__), orm)
        s.commit()
    with Session(intake_db.engine) as s:
        stored = {r.sequence: r for r in s.execute(select(StoredEvent)).scalars()}
        # the raw stored forms (a UUID's text on SQLite, a timestamp's), as the database holds them
        raw_ids = dict(s.execute(text("SELECT sequence, CAST(event_id AS TEXT) FROM event")).all())
        raw_at = dict(s.execute(text("SELECT sequence, CAST(occurred_at AS TEXT) FROM event")).all())
    for row in fast + orm:
        got = stored[row["sequence"]]
        assert (got.event_id, got.region_code, got.body) == (row["event_id"], row["region_code"], row["body"])
        assert got.occurred_at == row["occurred_at"] and got.occurred_at.utcoffset() == timedelta(0)
    # same shapes either way: what the fast path stored cannot be told from what SQLAlchemy stored
    assert len({len(v) for v in raw_ids.values()}) == 1, raw_ids
    assert {len(raw_at[r["sequence"]]) for r in fast} == {len(raw_at[r["sequence"]]) for r in orm}


def test_bytes_are_stored_as_given(tmp_path, intake_db, rows_as):
    """A large binary value (a scoring worker's applied batch: megabytes of records) is stored as
    bytes, not as text, either way."""
    with fresh_database(intake_db.backend, tmp_path, "scoring") as scoring_db:
        records = b"\n".join(b'{"n": %d, "text": "\\u4e2d\xe4\xb8\xad"}' % i for i in range(20_000))
        with Session(scoring_db.engine) as s:
            insert_rows(s, AppliedBatch.__table__, [{"events": 20_000, "regions": "513431" * 20_000,
                                                     "records": records}])
            s.commit()
        with Session(scoring_db.engine) as s:
            assert s.execute(select(AppliedBatch.records)).scalar_one() == records


def test_no_rows_is_no_statement(intake_db):
    with Session(intake_db.engine) as s:
        insert_rows(s, StoredEvent.__table__, [])
        s.commit()
        assert s.execute(select(StoredEvent)).first() is None


def test_a_violated_constraint_is_sqlalchemys_error_and_the_transaction_rolls_back(intake_db, rows_as):
    """On PostgreSQL the rows go through COPY, past SQLAlchemy: its errors must still be SQLAlchemy's
    (callers catch IntegrityError / DBAPIError), and nothing of the failed transaction stays."""
    events = rows(2, 1)
    with Session(intake_db.engine) as s:
        insert_rows(s, StoredEvent.__table__, events[:1])
        s.commit()
    with Session(intake_db.engine) as s:
        with pytest.raises(IntegrityError):
            insert_rows(s, StoredEvent.__table__, [events[1], events[0]])  # the second is already stored
        s.rollback()
        assert [r.sequence for r in s.execute(select(StoredEvent)).scalars()] == [1]
        insert_rows(s, StoredEvent.__table__, events[1:])  # the session is usable again
        s.commit()
    with Session(intake_db.engine) as s:
        assert sorted(r.sequence for r in s.execute(select(StoredEvent)).scalars()) == [1, 2]


@pytest.fixture(params=["json", "executemany"])
def upserts_as(request, monkeypatch):
    """On PostgreSQL upsert_rows sends many rows as one JSON value in one statement and a few as an
    executemany: each test takes both ways (on SQLite both are an executemany)."""
    monkeypatch.setattr(bulk, "JSON_FROM", 1 if request.param == "json" else 10**9)
    return request.param


AT = datetime(2026, 3, 2, 9, 30, 15, 123456, tzinfo=BEIJING)


def score(code: str, total: float, **changed) -> dict:
    return {"region_code": code, "year": 2026, "level": "county", "parent_code": "513400", "league": "exited",
            "total": total, "grade": "good", "gated": total < 50, "components": '{"a": 1}',
            "policy_id": "default-v1", "cause": f"c{total}", "as_of": AT + timedelta(hours=total), **changed}


def test_an_upsert_inserts_new_keys_and_replaces_every_other_column_of_existing_ones(tmp_path, intake_db, upserts_as):
    """`upsert_rows` (the scoring worker's score rows, team points, offsets) stores what
    `kit.upsert.upsert` stores, on both backends."""
    at = AT

    with fresh_database(intake_db.backend, tmp_path, "scoring") as scoring_db:
        with Session(scoring_db.engine) as s:
            upsert_rows(s, ScoreRow.__table__, [score("513431", 10), score("513432", 20)], keys=("region_code", "year"))
            s.commit()
        with Session(scoring_db.engine) as s:
            upsert_rows(s, ScoreRow.__table__, [score("513432", 70), score("513433", 30)], keys=("region_code", "year"))
            upsert(s, ScoreRow.__table__, [score("513434", 40)], keys=("region_code", "year"))
            s.commit()
        with Session(scoring_db.engine) as s:
            stored = {r.region_code: r for r in s.execute(select(ScoreRow)).scalars()}
            raw_at = dict(s.execute(text("SELECT region_code, CAST(as_of AS TEXT) FROM score")).all())
        assert {code: (r.total, r.cause, r.gated, r.as_of) for code, r in stored.items()} == {
            code: (t, f"c{t}", t < 50, at + timedelta(hours=t))
            for code, t in (("513431", 10), ("513432", 70), ("513433", 30), ("513434", 40))}
        assert len({len(v) for v in raw_at.values()}) == 1, raw_at  # stored as SQLAlchemy's own upsert stores


def test_many_rows_are_copied_and_a_few_inserted(intake_db, monkeypatch):
    """COPY_FROM rows or more go through COPY on PostgreSQL; fewer as an INSERT (SQLite: always)."""
    statements = []
    plan = bulk._plan

    def spied(*args, **kwargs):
        statements.append(plan(*args, **kwargs)[0].split()[0])
        return plan(*args, **kwargs)

    monkeypatch.setattr(bulk, "_plan", spied)
    events = rows(bulk.COPY_FROM + 1, 1)
    with Session(intake_db.engine) as s:
        insert_rows(s, StoredEvent.__table__, events[:1])
        insert_rows(s, StoredEvent.__table__, events[1:])
        s.commit()
    assert statements == (["INSERT", "COPY"] if intake_db.backend == "postgresql" else ["INSERT", "INSERT"])
    with Session(intake_db.engine) as s:
        assert s.execute(select(func.count()).select_from(StoredEvent)).scalar_one() == len(events)


def test_an_upsert_of_one_key_twice_keeps_the_last_row(tmp_path, intake_db, upserts_as):
    """Rows with the same key in one call: the last one is stored, as when each row is a statement
    of its own (one set-based statement may not update a row twice: the rows are made unique first)."""
    with fresh_database(intake_db.backend, tmp_path, "scoring") as scoring_db:
        with Session(scoring_db.engine) as s:
            upsert_rows(s, ScoreRow.__table__, [score("513431", 10)], keys=("region_code", "year"))
            s.commit()
        with Session(scoring_db.engine) as s:
            upsert_rows(s, ScoreRow.__table__, [score("513431", 20), score("513432", 5), score("513431", 30),
                                                score("513432", 6, grade="poor")],
                        keys=("region_code", "year"))
            s.commit()
        with Session(scoring_db.engine) as s:
            stored = {r.region_code: (r.total, r.grade, r.parent_code) for r in s.execute(select(ScoreRow)).scalars()}
        assert stored == {"513431": (30, "good", "513400"), "513432": (6, "poor", "513400")}


def test_an_upsert_of_a_too_long_value_is_refused_not_cut_short(tmp_path, upserts_as):
    """JSON values are cast to the columns' types without their lengths: a value longer than its column is refused
    by the INSERT (as a statement per row refuses it), not cut to the length, and nothing of the
    call is stored."""
    with fresh_database("postgresql", tmp_path, "scoring") as scoring_db:
        with Session(scoring_db.engine) as s:
            with pytest.raises(DBAPIError, match="too long"):
                upsert_rows(s, ScoreRow.__table__, [score("513431", 10), score("513432", 10, grade="g" * 33)],
                            keys=("region_code", "year"))
            s.rollback()
            assert s.execute(select(func.count()).select_from(ScoreRow)).scalar_one() == 0


def test_many_upsert_rows_are_one_statement_on_postgresql(intake_db, tmp_path, monkeypatch):
    """JSON_FROM rows or more are one INSERT … SELECT FROM jsonb_array_elements on PostgreSQL; fewer, an
    executemany of INSERT … VALUES (SQLite: always)."""
    sources = []
    plan = bulk._plan

    def spied(*args, **kwargs):
        sources.append(plan(*args, **kwargs)[0].split(") ", 1)[1].split()[0])
        return plan(*args, **kwargs)

    monkeypatch.setattr(bulk, "_plan", spied)
    with fresh_database(intake_db.backend, tmp_path, "scoring") as scoring_db:
        with Session(scoring_db.engine) as s:
            upsert_rows(s, ScoreRow.__table__, [score("513431", 1)], keys=("region_code", "year"))
            upsert_rows(s, ScoreRow.__table__, [score(str(513432 + i), i) for i in range(bulk.JSON_FROM)],
                        keys=("region_code", "year"))
            s.commit()
            assert s.execute(select(func.count()).select_from(ScoreRow)).scalar_one() == 1 + bulk.JSON_FROM
    assert sources == (["VALUES", "SELECT"] if intake_db.backend == "postgresql" else ["VALUES", "VALUES"])


def test_an_upsert_stores_nulls_and_big_numbers(tmp_path, intake_db, upserts_as):
    """Missing values (null in the JSON) and a BIGINT past 32 bits go in as given: the consumer offsets
    the workers store with their batches."""
    def offset(partition: int, next_offset: int, event: str | None) -> dict:
        return {"topic": "kaohe.intake.events.v1", "partition": partition, "next_offset": next_offset,
                "last_event_id": event, "topic_id": None, "owner": None}

    with fresh_database(intake_db.backend, tmp_path, "scoring") as scoring_db:
        with Session(scoring_db.engine) as s:
            upsert_rows(s, ConsumerOffset.__table__, [offset(0, 5, "e0"), offset(1, 7, None)],
                        keys=("topic", "partition"))
            upsert_rows(s, ConsumerOffset.__table__, [offset(0, 2**40, None), offset(2, 1, "e2")],
                        keys=("topic", "partition"))
            s.commit()
        with Session(scoring_db.engine) as s:
            stored = {r.partition: (r.next_offset, r.last_event_id, r.topic_id, r.owner)
                      for r in s.execute(select(ConsumerOffset)).scalars()}
        assert stored == {0: (2**40, None, None, None), 1: (7, None, None, None), 2: (1, "e2", None, None)}


def test_an_upsert_stores_floats_and_texts_exactly(tmp_path, intake_db, upserts_as):
    """Through JSON, a float comes back the same double (not NaN or infinity, which JSON has no
    number for, nor a Decimal, which orjson does not write: those rows go as statements of their
    own), and a text with quotes, backslashes, newlines and Chinese as given."""
    totals = [0.1 + 0.2, 1 / 3, 1e-300, 2.5e15 + 0.5, -123.456e-7, float("nan"), float("inf"), Decimal("1.25")]
    if intake_db.backend == "sqlite":
        totals[5] = 7.25  # SQLite has no NaN (it stores NULL)
    texts = ['a "quoted" \\ back\\slash', "line\nbreak\ttab", "中文 {\"json\": [1]}", "", "\u2028", "x", "y", "z"]
    rows = [{**score(str(513431 + i), 1), "total": t, "components": text_}
            for i, (t, text_) in enumerate(zip(totals, texts))]
    with fresh_database(intake_db.backend, tmp_path, "scoring") as scoring_db:
        with Session(scoring_db.engine) as s:
            upsert_rows(s, ScoreRow.__table__, rows[:5], keys=("region_code", "year"))
            upsert_rows(s, ScoreRow.__table__, rows[5:7] + rows[:1], keys=("region_code", "year"))
            upsert_rows(s, ScoreRow.__table__, rows[7:] + rows[1:2], keys=("region_code", "year"))
            s.commit()
        with Session(scoring_db.engine) as s:
            stored = {r.region_code: (r.total, r.components) for r in s.execute(select(ScoreRow)).scalars()}
    for r in rows:
        total, components = stored[r["region_code"]]
        assert components == r["components"]
        assert total == r["total"] or (math.isnan(total) and math.isnan(r["total"]))
