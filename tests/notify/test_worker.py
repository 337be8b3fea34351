"""End to end over a real broker: intake, scoring and ranking messages become notifications,
routed by region and type filter, once each (redelivered sources make nothing twice), with
rectification deadlines watched by notify itself; poison messages are dead-lettered; a worker
killed while deliveries are pending loses nothing and sends nothing twice."""

import os
import signal
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest
from sqlalchemy import select
from sqlmodel import Session

from services.events import topics
from services.intake.app import create_app as create_intake
from services.intake.regions.service import load as load_regions
from services.kit.kafka import ensure_topics
from services.kit.migrate import ROOT
from services.kit.settings import Settings
from services.notify.models import Delivery, Message, TrackedFinding
from services.notify.notifications import TOPICS
from services.notify.worker import DEAD_LETTERS, Worker, build_relay
from tests import factories as f
from tests.conftest import fresh_database
from tests.http_helpers import serve
from tests.kafka_helpers import QUICK_GROUP, headers, read_messages
from tests.notify.conftest import fast_settings, make_api
from tests.notify.receiver import Receiver
from tests.notify.sources import Sources, finding
from tests.waiting import wait_for

pytestmark = pytest.mark.broker
COUNTY = "510104"  # a Chengdu county: only its own endpoint hears about it


def local_today() -> date:
    return datetime.now(timezone.utc).astimezone(ZoneInfo("Asia/Shanghai")).date()


@pytest.fixture
def system(notify_db, access, own_broker, tmp_path):
    """Notify's API and worker (consumer, dispatcher and relay threads) on a broker of this test."""
    settings = fast_settings(tmp_path, kafka_bootstrap_servers=own_broker.bootstrap_servers, topic_partitions=3,
                             relay_idle_ms=10, consumer_max_poll_interval_ms=1000)
    ensure_topics(own_broker.bootstrap_servers, [*TOPICS, *DEAD_LETTERS], 3)  # no auto-created topic: one join
    stop = threading.Event()
    worker, relay = Worker(settings, notify_db.engine), build_relay(settings, notify_db.engine)
    threads = [threading.Thread(target=worker.run, args=(stop,), daemon=True),
               threading.Thread(target=relay.run, args=(stop,), daemon=True)]
    sources = Sources(own_broker.bootstrap_servers)
    receivers: list[Receiver] = []
    for api in make_api(settings, notify_db, access):
        try:
            yield api, sources, receivers, threads, own_broker
        finally:
            stop.set()
            for t in threads:
                t.join(20)
            worker.close()
            relay.close()
            sources.close()
            for r in receivers:
                r.close()


def subscribe(api, receivers, region: str, **body) -> Receiver:
    r = Receiver()
    receivers.append(r)
    r.secrets.append(api.register(r.url, headers=api.key(region), **body)["secret"])
    return r


def overdue_findings(sources, today: date) -> None:
    """O-1 overdue since today; O-2 disputed before its deadline (nothing while in dispute); O-3
    not due yet; O-4 withdrawn."""
    sources.inspection(COUNTY, [finding("O-1", "major", today - timedelta(days=1)),
                                finding("O-2", "major", today - timedelta(days=1)),
                                finding("O-3", "major", today + timedelta(days=3)),
                                finding("O-4", "major", today - timedelta(days=2))], days_ago=5)
    sources.event(COUNTY, "finding.disputed", {"finding_id": "O-2", "evidence": ["photo"]},
                  datetime.now(timezone.utc) - timedelta(days=4))
    sources.event(COUNTY, "finding.withdrawn", {"finding_id": "O-4", "decided_by": "x"},
                  datetime.now(timezone.utc) - timedelta(days=4))


def test_notifications_are_routed_by_region_and_type_once_each(system):
    """Also: overdue once per finding (not while disputed, never if withdrawn), poison dead-lettered."""
    api, sources, receivers, threads, broker = system
    liangshan = subscribe(api, receivers, "513400")
    ganzi = subscribe(api, receivers, "513300")
    province = subscribe(api, receivers, "510000", event_types=["finding.critical_recorded"])
    county = subscribe(api, receivers, "513431", event_types=["standing.changed"])
    elsewhere = subscribe(api, receivers, COUNTY, event_types=["rectification.overdue"])
    for t in threads:
        t.start()
    sources.raw(topics.SCORING_SCORES, "513431", b"{not json")  # poison: dead-lettered, the rest goes on
    sources.raw(topics.RANKING_STANDINGS, "513431", b'{"region_code": "5134"}')
    sources.raw(topics.INTAKE_EVENTS, "513431", b'{"type": "inspection.recorded"}')
    today = local_today()
    inspection = sources.inspection("513431", [finding("F-1", "critical", today + timedelta(days=5)),
                                               finding("F-2", "major", today - timedelta(days=1)),
                                               finding("F-3", "minor", today + timedelta(days=5))])
    sources.inspection("513322", [finding("G-1", "critical", today + timedelta(days=5))])
    sources.raw(topics.INTAKE_EVENTS, "513431", inspection)  # a redelivery: nothing twice
    score = sources.score("513431", "较好", "好")
    sources.resend(topics.SCORING_SCORES, "513431", score)  # a resend
    sources.score("513431", "好", "好")  # same band: nothing
    sources.score("513431", "好", None)  # a first score: nothing
    sources.score("513400", "一般", "较好", level="prefecture", total=60.0, previous_total=65.0)
    tick = datetime.now(timezone.utc)  # down, up and down again before the scoring clock moves: two downs
    for grade, previous in (("一般", "好"), ("好", "一般"), ("一般", "好")):
        sources.score("513432", grade, previous, as_of=tick)
    sources.standing("513431", "513400", 2, 3)
    sources.standing("513432", "513400", 1, None)  # entered the league: no move
    overdue_findings(sources, today)
    wait_for(lambda: len(liangshan.delivered()) >= 8 and len(ganzi.delivered()) >= 1
             and len(province.delivered()) >= 2 and len(county.delivered()) >= 1 and elsewhere.delivered(),
             what="every notification", timeout=30)
    # O-2's dispute fails today: it is open again, past its deadline
    sources.event(COUNTY, "finding.upheld", {"finding_id": "O-2", "decided_by": "x"}, datetime.now(timezone.utc))
    wait_for(lambda: len(elsewhere.delivered()) >= 2, what="O-2 overdue")
    sources.event(COUNTY, "rectification.reported", {"finding_id": "O-1", "evidence": ["photo"]},
                  datetime.now(timezone.utc))
    threading.Event().wait(0.6)  # a few ticks: nothing more
    assert sorted(m.json["data"]["finding_id"] for m in elsewhere.delivered()) == ["O-1", "O-2"]
    assert elsewhere.delivered()[0].json["data"]["deadline"] == (today - timedelta(days=1)).isoformat()
    kinds = lambda r: sorted((m.json["type"], m.json["data"]["region_code"]) for m in r.delivered())  # noqa: E731
    assert kinds(liangshan) == [("finding.critical_recorded", "513431"), ("rectification.overdue", "513431"),
                                ("score.threshold_crossed", "513400"), ("score.threshold_crossed", "513431"),
                                *[("score.threshold_crossed", "513432")] * 3, ("standing.changed", "513431")]
    assert kinds(ganzi) == [("finding.critical_recorded", "513322")]
    assert kinds(province) == [("finding.critical_recorded", "513322"), ("finding.critical_recorded", "513431")]
    assert kinds(county) == [("standing.changed", "513431")]
    every = [m for r in receivers for m in r.delivered()]
    assert all(m.verified_with for m in every)
    by_type = {m.json["type"]: m.json for m in liangshan.delivered()}
    assert by_type["finding.critical_recorded"]["data"]["finding_id"] == "F-1"
    assert by_type["rectification.overdue"]["data"]["finding_id"] == "F-2"
    assert by_type["standing.changed"]["data"]["movement"] == 1
    assert all(len(m.body) < 20_000 and set(m.json) == {"type", "timestamp", "data"} for m in every)
    # the same notification to several endpoints is one message: one webhook-id
    f1 = {r.json["data"]["finding_id"]: r.webhook_id for r in province.of_type("finding.critical_recorded")}["F-1"]
    assert liangshan.of_type("finding.critical_recorded")[0].webhook_id == f1
    for topic in (topics.SCORING_SCORES, topics.RANKING_STANDINGS, topics.INTAKE_EVENTS):
        dead = read_messages(broker.bootstrap_servers, topics.dead_letter(topic), lambda ms: len(ms) >= 1)
        assert headers(dead[0])["original_topic"] == topic and headers(dead[0])["error"]


def start_worker(db, broker, instance: str) -> subprocess.Popen:
    """`python -m services.notify.worker` as its own process, on the test's database and broker."""
    env = {**os.environ, "KAOHE_NOTIFY_DATABASE_URL": db.url, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
           "KAOHE_NOTIFY_ALLOW_PRIVATE_URLS": "true", "KAOHE_NOTIFY_RETRY_SCHEDULE_S": orjson.dumps([0] + [0.3] * 60),
           "KAOHE_NOTIFY_RETRY_JITTER": "0.1", "KAOHE_NOTIFY_TIMEOUT_S": "1", "KAOHE_NOTIFY_POLL_MS": "20",
           "KAOHE_TOPIC_PARTITIONS": "3", "KAOHE_CONSUMER_INSTANCE_ID": instance,
           "KAOHE_CONSUMER_MAX_POLL_INTERVAL_MS": "1000", "KAOHE_CONSUMER_SESSION_TIMEOUT_MS": "2000",
           "KAOHE_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, "-m", "services.notify.worker"], env=env, cwd=ROOT)


def pending_tries(db) -> list[int]:
    with Session(db.engine) as s:
        return list(s.execute(select(Delivery.tries).where(Delivery.status == "pending")).scalars())


def test_a_worker_killed_while_deliveries_are_pending_loses_nothing(notify_db, access, own_broker, tmp_path):
    settings = fast_settings(tmp_path, kafka_bootstrap_servers=own_broker.bootstrap_servers)
    ensure_topics(own_broker.bootstrap_servers, [*TOPICS, *DEAD_LETTERS], 3)
    receiver, sources, workers = Receiver(), Sources(own_broker.bootstrap_servers), []
    try:
        for api in make_api(settings, notify_db, access):
            receiver.secrets.append(api.register(receiver.url, event_types=["finding.critical_recorded"])["secret"])
        receiver.down()  # deliveries fail: connection refused
        workers.append(start_worker(notify_db, own_broker, "notify-restart"))
        deadline = local_today() + timedelta(days=5)
        sources.inspection("513431", [finding(f"K-{i}", "critical", deadline) for i in range(6)])
        sources.inspection("513432", [finding(f"L-{i}", "critical", deadline) for i in range(4)])
        wait_for(lambda: len(t := pending_tries(notify_db)) == 10 and min(t) >= 2, what="10 deliveries failing",
                 timeout=30)
        workers[0].kill()  # SIGKILL: no clean shutdown
        workers[0].wait(10)
        workers.append(start_worker(notify_db, own_broker, "notify-restart"))
        sources.inspection("513433", [finding(f"M-{i}", "critical", deadline) for i in range(3)])
        receiver.up()
        wait_for(lambda: len(receiver.delivered()) >= 13, what="every notification after the restart", timeout=30)
        threading.Event().wait(0.6)  # time for any duplicate to show up
        got = [r.webhook_id for r in receiver.delivered()]
        assert len(got) == len(set(got)) == 13
        assert sorted(r.json["data"]["finding_id"] for r in receiver.delivered()) == sorted(
            [f"K-{i}" for i in range(6)] + [f"L-{i}" for i in range(4)] + [f"M-{i}" for i in range(3)])
        assert all(r.verified_with for r in receiver.delivered())
        assert pending_tries(notify_db) == []
    finally:
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)
                w.wait(20)
        receiver.close()
        sources.close()


def critical_findings(db) -> list[str]:
    with Session(db.engine) as s:
        keys = s.execute(select(Message.dedupe_key).where(Message.type == "finding.critical_recorded")).scalars()
        return sorted(k.rsplit("/", 1)[1] for k in keys)  # type:county/finding_id


def test_a_worker_started_after_the_broker_lost_its_log_catches_up_from_intakes_export(
        notify_db, access, own_broker, tmp_path):
    """B-1 was stored by intake while the worker was away, and the log that would have brought it
    is gone (here it was never published, as for an event the old log held unread): it comes from
    intake's export. A-1 (read from the old log) and C-1 (the new log) are not made twice."""
    own_broker.partitions = 3  # a restart creates the topics first, as make run's broker does
    deadline = local_today() + timedelta(days=5)
    with fresh_database("sqlite", tmp_path, "intake") as intake_db:
        with Session(intake_db.engine) as s:
            load_regions(session=s)
            s.commit()
        intake = create_intake(Settings(data_dir=tmp_path, kafka_bootstrap_servers=own_broker.bootstrap_servers),
                               engine=intake_db.engine)
        with serve(intake) as intake_url:
            settings = fast_settings(tmp_path, kafka_bootstrap_servers=own_broker.bootstrap_servers,
                                     topic_partitions=3, intake_url=intake_url, service_token=access.admin,
                                     **QUICK_GROUP)

            def running(until) -> None:
                stop, worker = threading.Event(), Worker(settings, notify_db.engine)
                thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
                thread.start()
                try:
                    wait_for(until, what="the critical findings", timeout=60)
                finally:
                    stop.set()
                    thread.join(30)
                    worker.close()

            sources = Sources(own_broker.bootstrap_servers)
            try:
                sources.inspection("513431", [finding("A-1", "critical", deadline)])
                running(lambda: critical_findings(notify_db) == ["A-1"])
                r = httpx.post(f"{intake_url}/v1/events", headers=access.headers,
                               json=f.inspection(f.finding("B-1", severity="critical")))
                assert r.status_code == 201, r.text
                sources.close()
                own_broker.stop()
                own_broker.start()  # empty
                sources = Sources(own_broker.bootstrap_servers)
                sources.inspection("513431", [finding("C-1", "critical", deadline)])
                running(lambda: critical_findings(notify_db) == ["A-1", "B-1", "C-1"])
            finally:
                sources.close()
    with Session(notify_db.engine) as s:
        assert s.get(TrackedFinding, (f.COUNTY, "B-1")) is not None
