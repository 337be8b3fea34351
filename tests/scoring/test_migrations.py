"""Scoring's migrations move what is stored, not only the schema: 0005 packs the applied events
and explanation lines of 0004 into batches, and its downgrade unpacks them; 0007 gives cached counties an
exit year (none until intake's regions fill it in), and its downgrade drops it, keeping the counties; 0009
counts the writers' writes on the clock's row, and its downgrade drops the count, keeping the clock; 0010
compresses applied records with lz4 on PostgreSQL; on both backends."""

import uuid
from datetime import datetime, timedelta, timezone

import orjson
import pytest
from sqlalchemy import column, insert, select, table, text
from sqlmodel import Session

from services.kit.db import UTCDateTime
from services.scoring import store
from tests.conftest import Database, fresh_database
from tests.conftest import migrate as conftest_migrate

BEIJING = timezone(timedelta(hours=8))


def migrate(engine, schema: str | None, target: str, *, down: bool = False) -> None:
    conftest_migrate("scoring", Database("", "", schema, engine), target, down=down)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path):
    """A scoring database with no schema yet (migrated by the test, step by step)."""
    with fresh_database(request.param, tmp_path, "scoring", migrated=False) as db:
        yield db.engine, db.schema


def test_applied_events_and_explanation_lines_survive_0005_both_ways(empty_db):
    engine, schema = empty_db
    migrate(engine, schema, "0004_scoring")
    at = datetime(2026, 3, 2, 9, 30, tzinfo=BEIJING)
    records = [{"event_id": str(uuid.uuid4()), "sequence": n, "region_code": code, "type": "daily_check.recorded"}
               for n, code in ((3, "513431"), (1, "513432"), (2, "513431"))]
    # a record published with line breaks in its JSON (not by intake) is kept on one line
    raw = {1: orjson.dumps(records[1], option=orjson.OPT_INDENT_2).decode()}
    applied_event = table("applied_event", column("event_id"), column("sequence"), column("region_code"),
                          column("record"))
    explanation = table("explanation", column("region_code"), column("year"), column("component"),
                        column("points"), column("rule"), column("cause"), column("policy_id"),
                        column("at", UTCDateTime()))
    lines = [("513431", "inspections", -1.5, "default-v1"), ("513432", "inspections", -2.0, "default-v1"),
             ("513431", "rectification", -0.5, "default-v1"), ("513431", "inspections", 1.5, "strict-v2")]
    with Session(engine) as s:
        s.execute(insert(applied_event), [
            {"event_id": uuid.UUID(r["event_id"]).hex if schema is None else r["event_id"], "sequence": r["sequence"],
             "region_code": r["region_code"], "record": raw.get(i, orjson.dumps(r).decode())}
            for i, r in enumerate(records)])
        s.execute(insert(explanation), [
            {"region_code": code, "year": 2026, "component": component, "points": points, "rule": "r",
             "cause": f"cause-{i}", "policy_id": policy, "at": at + timedelta(days=i)}
            for i, (code, component, points, policy) in enumerate(lines)])
        s.commit()

    migrate(engine, schema, "scoring@head")
    # the events in intake's order (the engine is rebuilt from them), each record on one line
    assert [orjson.loads(r) for r in store.stored_records(engine)] == sorted(records, key=lambda r: r["sequence"])
    assert all(b"\n" not in r for r in store.stored_records(engine))
    assert list(store.stored_records(engine, owned=lambda c: c == "513432")) == [orjson.dumps(records[1])]
    with Session(engine) as s:
        assert store.applied_count(s) == 3
        got = [(code, year, line.component, line.points, line.cause, line.policy_id, line.at)
               for _, code, year, line in store.explanation_lines(s, "513431", 2026)]
    assert got == [("513431", 2026, component, points, f"cause-{i}", policy, at + timedelta(days=i))
                   for i, (code, component, points, policy) in enumerate(lines) if code == "513431"]

    migrate(engine, schema, "0004_scoring", down=True)
    with Session(engine) as s:
        back = s.execute(select(applied_event.c.sequence, applied_event.c.record)
                         .order_by(applied_event.c.sequence)).all()
        assert [(n, orjson.loads(record)) for n, record in back] == [(r["sequence"], r) for r in
                                                                      sorted(records, key=lambda r: r["sequence"])]
        back = s.execute(select(explanation.c.region_code, explanation.c.component, explanation.c.points,
                                explanation.c.cause, explanation.c.policy_id, explanation.c.at)).all()
    assert sorted(back, key=lambda r: r.cause) == [(code, component, points, f"cause-{i}", policy,
                                                     at + timedelta(days=i))
                                                    for i, (code, component, points, policy) in enumerate(lines)]


def test_0007_adds_the_counties_exit_years_both_ways(empty_db):
    engine, schema = empty_db
    migrate(engine, schema, "0006_scoring")
    county = table("county", column("code"), column("prefecture_code"), column("status"))
    with Session(engine) as s:
        s.execute(insert(county), [{"code": "513431", "prefecture_code": "513400", "status": "in_poverty"},
                                   {"code": "510522", "prefecture_code": "510500", "status": "exited"}])
        s.commit()

    migrate(engine, schema, "scoring@head")
    with Session(engine) as s:  # cached before: no exit year (exited in every year) until intake's regions fill it
        assert store.exit_years(s) == {}
        assert store.counties(s) == {"513431": "in_poverty", "510522": "exited"}
        store.save_counties(s, [{"code": "510522", "baseline_status": "exited", "baseline_exit_year": 2018},
                                {"code": "513431", "baseline_status": "in_poverty", "baseline_exit_year": None}])
        s.commit()
        assert store.exit_years(s) == {"510522": 2018}

    migrate(engine, schema, "0006_scoring", down=True)
    with Session(engine) as s:
        assert sorted(s.execute(select(county)).all()) == [("510522", "510500", "exited"),
                                                            ("513431", "513400", "in_poverty")]
        columns = text("SELECT * FROM county")
        assert "exit_year" not in s.execute(columns).keys()


def test_0009_counts_the_writes_on_a_clock_from_before_both_ways(empty_db):
    engine, schema = empty_db
    migrate(engine, schema, "0008_scoring")
    at = datetime(2026, 3, 2, 1, 0, tzinfo=timezone.utc)
    clock = table("worker_clock", column("id"), column("as_of", UTCDateTime()), column("policy_id"),
                  column("generation"))
    with Session(engine) as s:
        s.execute(insert(clock).values(id=1, as_of=at, policy_id="default-v3", generation=4))
        s.commit()

    migrate(engine, schema, "scoring@head")
    with Session(engine) as s:  # the clock as it was, its count from 0: each write moves it
        assert store.lock(s) == store.Clock(4, at, "default-v3", 1)
        assert store.lock(s).writes == 2
        s.commit()

    migrate(engine, schema, "0008_scoring", down=True)
    with Session(engine) as s:
        assert s.execute(select(clock)).all() == [(1, at, "default-v3", 4)]
        assert "writes" not in s.execute(text("SELECT * FROM worker_clock")).keys()


def test_0010_compresses_new_applied_records_with_lz4_on_postgresql_both_ways(empty_db):
    """A batch's records (one large value) are compressed with lz4 from 0010 on, pglz before; a value
    stored before the upgrade keeps its method and reads back the same. SQLite: the same bytes back."""
    engine, schema = empty_db
    migrate(engine, schema, "0009_scoring")
    applied = table("applied_batch", column("id"), column("events"), column("regions"), column("records"))
    values = [b"\n".join(orjson.dumps({"event_id": str(uuid.UUID(int=n * 1000 + i)), "sequence": n * 1000 + i,
                                       "region_code": "513431", "payload": {"note": "x" * 40}})
                         for i in range(200)) for n in range(3)]

    def write(n: int) -> None:
        with Session(engine) as s:
            s.execute(insert(applied).values(id=n + 1, events=200, regions="513431" * 200, records=values[n]))
            s.commit()

    def methods() -> list:
        with Session(engine) as s:
            return [m for (m,) in s.execute(text("SELECT pg_column_compression(records) FROM applied_batch "
                                                 "ORDER BY id"))]

    write(0)
    migrate(engine, schema, "scoring@head")
    write(1)
    if schema is not None:
        assert methods() == ["pglz", "lz4"]
    migrate(engine, schema, "0009_scoring", down=True)
    write(2)
    if schema is not None:
        assert methods() == ["pglz", "lz4", "pglz"]
    with Session(engine) as s:
        assert [bytes(r) for (r,) in s.execute(select(applied.c.records).order_by(applied.c.id))] == values
