"""Notify's store without a broker: findings are their county's (partners' finding ids are unique
per county only), so two counties' findings of one id are two notifications and two watches."""

from datetime import date, timedelta
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy import insert, select
from sqlmodel import Session

from services.events import registry, topics
from services.notify import store
from services.notify.models import Delivery, Endpoint, Message, TrackedFinding
from services.notify.notifications import CRITICAL, OVERDUE, TOPIC_HANDLERS, Batch
from tests import factories as f

TZ = ZoneInfo("Asia/Shanghai")
LIANGSHAN, CHENGDU = "513400", "510100"
ZHAOJUE, JINJIANG = "513431", "510104"  # a county of each


def endpoints(session: Session) -> dict[str, str]:
    """One endpoint per prefecture, for every finding notification: prefecture → endpoint id."""
    rows = [{"id": f"ep_{code}", "region_code": code, "url": "https://example.org/hook", "description": "",
             "event_types": f"{CRITICAL} {OVERDUE}", "secret": "s", "created_by": "k", "created_at": f.T0,
             "updated_at": f.T0} for code in (LIANGSHAN, CHENGDU)]
    session.execute(insert(Endpoint.__table__), rows)
    return {r["region_code"]: r["id"] for r in rows}


def consume(session: Session, *events: dict) -> int:
    batch = Batch()
    for n, event in enumerate(events, start=1):
        TOPIC_HANDLERS[topics.INTAKE_EVENTS](registry.encode_record(n, f.T0, event), batch, TZ)
    return store.write(session, batch, TZ, f.T0)


def sent(session: Session, type_: str) -> set[tuple[str, str, str]]:
    """(endpoint, county, finding id) of every delivery of a notification of `type_`."""
    rows = session.execute(select(Delivery.endpoint_id, Message.region_code, Message.body)
                           .join(Message, Message.id == Delivery.message_id).where(Message.type == type_)).all()
    return {(e, region, orjson.loads(body)["data"]["finding_id"]) for e, region, body in rows}


def test_two_counties_critical_findings_of_one_id_go_each_to_its_prefecture(notify_db):
    deadline = (f.T0.date() + timedelta(days=5)).isoformat()
    with Session(notify_db.engine) as s:
        ep = endpoints(s)
        critical = f.finding("F-0001", severity="critical", deadline=deadline)
        assert consume(s, f.inspection(critical, region=ZHAOJUE)) == 1
        assert consume(s, f.inspection(critical, region=JINJIANG)) == 1  # not taken for Zhaojue's F-0001
        s.commit()
        assert sent(s, CRITICAL) == {(ep[LIANGSHAN], ZHAOJUE, "F-0001"), (ep[CHENGDU], JINJIANG, "F-0001")}
        assert {(t.region_code, t.finding_id) for t in s.execute(select(TrackedFinding)).scalars()} == {
            (ZHAOJUE, "F-0001"), (JINJIANG, "F-0001")}

        # Zhaojue fixes its F-0001 in time; Jinjiang's is still open when its deadline passes
        assert consume(s, f.step("rectification.reported", "F-0001", region=ZHAOJUE),
                       f.step("rectification.verified", "F-0001", region=ZHAOJUE)) == 0
        late = store.overdue_now(s, date.fromisoformat(deadline) + timedelta(days=1), TZ)
        assert store.record(s, late, f.T0) == 1
        s.commit()
        assert sent(s, OVERDUE) == {(ep[CHENGDU], JINJIANG, "F-0001")}
        states = {(t.region_code, t.state) for t in s.execute(select(TrackedFinding)).scalars()}
        assert states == {(ZHAOJUE, "verified"), (JINJIANG, "open")}


def test_a_message_stored_under_the_old_key_still_dedupes_its_own_countys_finding_only(notify_db):
    # before finding ids were per county a critical finding's key was type:finding_id: re-reading
    # the event that made it (e.g. from intake's export) must not notify it again, while another
    # county's finding of that id is a finding of its own
    with Session(notify_db.engine) as s:
        ep = endpoints(s)
        s.execute(insert(Message.__table__), [{"id": "msg_old", "type": CRITICAL, "region_code": ZHAOJUE,
                                               "dedupe_key": f"{CRITICAL}:F-0001", "body": "{}",
                                               "created_at": f.T0}])
        critical = f.finding("F-0001", severity="critical")
        assert consume(s, f.inspection(critical, region=ZHAOJUE)) == 0
        assert consume(s, f.inspection(critical, region=JINJIANG)) == 1
        s.commit()
        assert sent(s, CRITICAL) == {(ep[CHENGDU], JINJIANG, "F-0001")}
        keys = set(s.execute(select(Message.dedupe_key)).scalars())
        assert keys == {f"{CRITICAL}:F-0001", f"{CRITICAL}:{JINJIANG}/F-0001"}
