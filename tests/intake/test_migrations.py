"""Intake's 0003 makes partners' ids unique per county: rows stored before it keep working after it,
and its downgrade refuses, changing nothing, while two counties share an id; on both backends."""

from datetime import date, datetime, timezone

import orjson
import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from services.events import registry
from services.intake.findings import service as findings
from services.intake.regions.service import Directory, load
from services.intake.store.service import append, append_many, head, page, record_of, unpublished
from tests import factories as f
from tests.conftest import fresh_database
from tests.conftest import migrate as conftest_migrate
from tests.factories import COUNTY, OTHER_COUNTY

AT = datetime(2026, 3, 2, 1, 30, tzinfo=timezone.utc)


def migrate(db, target: str, *, down: bool = False) -> None:
    conftest_migrate("intake", db, target, down=down)


def finding_row(finding_id: str, region_code: str) -> dict:
    return {"finding_id": finding_id, "region_code": region_code, "prefecture_code": "513400", "inspection_id": "I-1",
            "team_id": "t", "mode": "unannounced", "category": "basic_work", "indicator": "registry_accuracy",
            "severity": "major", "description": "d", "responsible_unit": "u", "responsible_person": "p",
            "deadline": date(2026, 4, 1), "state": "open", "found_at": AT, "state_changed_at": AT, "reports": 0,
            "rejections": 0, "dispute_decided": False, "last_sequence": 1}


def insert(conn, table: str, rows: list[dict]) -> None:
    columns = list(rows[0])
    conn.execute(text(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"),
                 rows)


def version(db) -> str:
    with db.engine.connect() as conn:
        return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0003_keeps_stored_ids_and_its_downgrade_refuses_ids_two_counties_share(backend, tmp_path):
    with fresh_database(backend, tmp_path, "intake") as db:
        migrate(db, "0002_intake", down=True)
        with db.engine.begin() as conn:  # a ledger as 0002 stored it: ids unique store-wide
            insert(conn, "finding", [finding_row("F-1", COUNTY), finding_row("F-2", OTHER_COUNTY)])
            insert(conn, "finding_transition", [
                {"sequence": 1, "finding_id": "F-1", "event_type": "inspection.recorded", "from_state": None,
                 "to_state": "open", "occurred_at": AT},
                {"sequence": 2, "finding_id": "F-2", "event_type": "inspection.recorded", "from_state": None,
                 "to_state": "open", "occurred_at": AT}])
            insert(conn, "household_risk", [{"household_id": "H-1", "region_code": COUNTY, "flagged": True,
                                             "last_sequence": 3}])
            insert(conn, "natural_key", [{"kind": "inspection", "key": "I-1", "region_code": COUNTY, "sequence": 1}])
            conn.execute(text("UPDATE chain_head SET sequence = 3"))  # as if events 1-3 were stored

        migrate(db, "intake@head")
        with Session(db.engine) as s:
            load(session=s)
            s.commit()
            entry, history = findings.get(session=s, region_code=OTHER_COUNTY, finding_id="F-2")
            assert (entry.region_code, [(h.sequence, h.region_code) for h in history]) == (OTHER_COUNTY,
                                                                                           [(2, OTHER_COUNTY)])
        directory = Directory(db.engine)

        def send(event: dict, session: Session) -> None:
            append(session=session, event=registry.parse(event), directory=directory,
                   clock=lambda: datetime(2027, 1, 10, tzinfo=timezone.utc))

        with Session(db.engine) as s:  # the stored rows are found by (county, id)…
            send(f.step("rectification.reported", "F-1"), s)
            send(f.envelope("return_risk.cleared", {"household_id": "H-1", "reasons": []}), s)
            with pytest.raises(Exception, match="already recorded"):
                send(f.inspection(f.finding(), inspection_id="I-1"), s)
            # …and another county may use them
            send(f.inspection(f.finding("F-1"), inspection_id="I-1", region=OTHER_COUNTY), s)
            s.commit()
            assert findings.get(session=s, region_code=COUNTY, finding_id="F-1")[0].state == "reported"
            assert findings.get(session=s, region_code=OTHER_COUNTY, finding_id="F-1")[0].state == "open"

        migrate(db, "0003_intake", down=True)
        with pytest.raises(RuntimeError, match=r"cannot downgrade 0003_intake.*finding F-1 \(in 2 counties\).*"
                                               r"natural_key inspection/I-1 \(in 2 counties\).*nothing was changed"):
            migrate(db, "0002_intake", down=True)
        assert version(db) == "0003_intake"
        with Session(db.engine) as s:
            assert findings.get(session=s, region_code=OTHER_COUNTY, finding_id="F-1")[1][0].region_code == OTHER_COUNTY

        with db.engine.begin() as conn:  # once the shared ids are gone, it goes down
            for table in ("finding", "finding_transition"):
                conn.execute(text(f"DELETE FROM {table} WHERE finding_id = 'F-1' AND region_code = :r"),
                             {"r": OTHER_COUNTY})
            conn.execute(text("DELETE FROM natural_key WHERE key = 'I-1' AND region_code = :r"), {"r": OTHER_COUNTY})
        migrate(db, "0002_intake", down=True)
        assert version(db) == "0002_intake"
        schema = inspect(db.engine)
        assert schema.get_pk_constraint("finding")["constrained_columns"] == ["finding_id"]
        assert schema.get_pk_constraint("household_risk")["constrained_columns"] == ["household_id"]
        assert schema.get_pk_constraint("natural_key")["constrained_columns"] == ["kind", "key"]
        assert "region_code" not in {c["name"] for c in schema.get_columns("finding_transition")}
        assert {i["name"] for i in schema.get_indexes("finding_transition")} == {"ix_finding_transition_finding_id"}
        with db.engine.begin() as conn:
            states = dict(conn.execute(text("SELECT finding_id, state FROM finding")).all())
            assert states == {"F-1": "reported", "F-2": "open"}
        with pytest.raises(IntegrityError), db.engine.begin() as conn:
            insert(conn, "finding", [finding_row("F-2", COUNTY)])


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_0004_publishes_from_the_first_unsent_outbox_row_and_its_downgrade_gives_the_rows_back(backend, tmp_path):
    with fresh_database(backend, tmp_path, "intake") as db:
        with Session(db.engine) as s:
            load(session=s)
            s.commit()
        directory = Directory(db.engine)
        events = [f.daily_check(region=COUNTY) for _ in range(5)]
        with Session(db.engine) as s:
            append_many(session=s, items=[registry.parse(e) for e in events], directory=directory,
                        clock=lambda: AT, request_ids=["req-1", None, "req-3", "req-4", None])
            s.commit()
        with Session(db.engine) as s:
            expected = [record_of(row) for row in page(session=s, where=[], after_sequence=0, limit=10)]

        migrate(db, "0003_intake", down=True)  # what 0003's relay would have had: a row per unpublished event
        with db.engine.begin() as conn:
            rows = conn.execute(text("SELECT id, topic, key, value, headers, sent_at FROM outbox ORDER BY id")).all()
            assert [orjson.loads(r.value) for r in rows] == expected
            assert [(r.topic, r.key, r.sent_at) for r in rows] == [("kaohe.intake.events.v1", COUNTY, None)] * 5
            assert [orjson.loads(r.headers) for r in rows][:2] == [
                {"request_id": "req-1", "event_id": events[0]["event_id"], "type": "daily_check.recorded",
                 "schema_version": "1", "sequence": "1"},
                {"event_id": events[1]["event_id"], "type": "daily_check.recorded", "schema_version": "1",
                 "sequence": "2"}]
            conn.execute(text("UPDATE outbox SET sent_at = :at WHERE id <= 3"), {"at": AT})  # 0003's relay sent 3

        migrate(db, "intake@head")
        assert "outbox" not in inspect(db.engine).get_table_names(schema=db.schema)
        with Session(db.engine) as s:
            assert unpublished(session=s) == 2  # the fourth and fifth events are published next
            assert [row.request_id for row in page(session=s, where=[], after_sequence=0, limit=10)] == [
                None, None, None, "req-4", None]  # the unsent rows' request ids, onto their events

        with db.engine.begin() as conn:  # everything sent before the upgrade: nothing to publish after it
            conn.execute(text("UPDATE published SET sequence = 0"))
        migrate(db, "0003_intake", down=True)
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE outbox SET sent_at = :at"), {"at": AT})
        migrate(db, "intake@head")
        with Session(db.engine) as s:
            assert unpublished(session=s) == 0 and head(session=s).sequence == 5
