"""Notify's 0003: tracked findings keyed by (county, finding id), both ways, on both backends."""

from datetime import date

import pytest
from sqlalchemy import column, insert, inspect, table, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from tests.conftest import Database, fresh_database
from tests.conftest import migrate as conftest_migrate

TRACKED = table("tracked_finding", column("finding_id"), column("region_code"), column("inspection_id"),
                column("severity"), column("deadline"), column("state"), column("responsible_unit"),
                column("overdue_notified"))


def migrate(engine, schema: str | None, target: str, *, down: bool = False) -> None:
    conftest_migrate("notify", Database("", "", schema, engine), target, down=down)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path):
    """A notify database with no schema yet (migrated by the test, step by step)."""
    with fresh_database(request.param, tmp_path, "notify", migrated=False) as db:
        yield db.engine, db.schema


def tracked(finding_id: str, county: str) -> dict:
    return {"finding_id": finding_id, "region_code": county, "inspection_id": "I-1", "severity": "critical",
            "deadline": date(2026, 3, 7), "state": "open", "responsible_unit": "u", "overdue_notified": False}


def primary_key(engine, schema: str | None) -> list[str]:
    return inspect(engine).get_pk_constraint("tracked_finding", schema=schema)["constrained_columns"]


def test_0003_keys_tracked_findings_by_county_and_id_both_ways(empty_db):
    engine, schema = empty_db
    migrate(engine, schema, "0002_notify")
    with Session(engine) as s:
        s.execute(insert(TRACKED), [tracked("F-0001", "513431")])
        s.commit()

    migrate(engine, schema, "notify@head")
    assert primary_key(engine, schema) == ["region_code", "finding_id"]
    with Session(engine) as s:
        s.execute(insert(TRACKED), [tracked("F-0001", "510104")])  # another county's F-0001
        s.commit()
        with pytest.raises(IntegrityError):
            s.execute(insert(TRACKED), [tracked("F-0001", "510104")])
        s.rollback()

    # two counties share F-0001: which to forget is not the downgrade's choice
    with pytest.raises(RuntimeError, match="F-0001"):
        migrate(engine, schema, "0002_notify", down=True)
    with Session(engine) as s:
        s.execute(text("DELETE FROM tracked_finding WHERE region_code = '510104'"))
        s.commit()
    migrate(engine, schema, "0002_notify", down=True)
    assert primary_key(engine, schema) == ["finding_id"]
    with Session(engine) as s:
        assert s.execute(text("SELECT region_code, finding_id FROM tracked_finding")).all() == [("513431", "F-0001")]
