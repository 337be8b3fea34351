"""The scoring worker over a real broker: events become scores, time lowers them, poison is
dead-lettered, and the API serves what the worker wrote."""

import threading
import time
from collections import namedtuple
from datetime import timedelta
from types import SimpleNamespace

import orjson
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaProducer
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from services.events import registry, topics
from services.intake.app import create_app as intake_app
from services.intake.relay import build as intake_relay
from services.kit import heap
from services.kit.broker import free_port
from services.kit.db import make_engine
from services.kit.migrate import upgrade
from services.kit.settings import Settings
from services.scoring import store
from services.scoring import worker as worker_module
from services.scoring.app import create_app as scoring_app
from services.scoring.base import Outbox as ScoringOutbox
from services.scoring.models import AppliedBatch, ConsumerOffset, ExplanationBatch, RebuildRequest, ScoreRow
from services.scoring.policy.model import shipped
from services.scoring.worker import Worker, build_relay
from tests import factories as f
from tests.conftest import fresh_database
from tests.http_helpers import serve
from tests.kafka_helpers import QUICK_GROUP, headers, read_messages
from tests.scoring.recompute import assert_matches_clean_recomputation
from tests.waiting import wait_for

pytestmark = pytest.mark.broker


@pytest.fixture
def scoring_db(database, tmp_path):
    """Scoring's own database, on the same backend as intake's in this test."""
    with fresh_database(database.backend, tmp_path, "scoring") as db:
        yield db


@pytest.fixture
def tick_s() -> float:
    """The worker's tick: short, so that deadlines pass within a test (a test may set its own)."""
    return 0.2


# no tick within a test: a policy activated or a rebuild requested must be taken up without one
# (within about a second; the waits allow for a busy machine)
NO_TICK = pytest.mark.parametrize("tick_s", [3600.0])


@pytest.fixture
def system(database, scoring_db, tmp_path, access, clock, own_broker, tick_s):
    """Intake (app + relay) and scoring (worker + relay + API) on one broker, running in threads."""
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=own_broker.bootstrap_servers, topic_partitions=3,
                        service_token=access.admin, relay_idle_ms=10, scoring_tick_s=tick_s, **QUICK_GROUP)
    clock.now = f.T0 + timedelta(hours=1)  # scores are computed as of this clock; tests move it
    stop = threading.Event()
    relays = [intake_relay(settings, engine=database.engine), build_relay(settings, scoring_db.engine)]
    # the worker reaches intake over HTTP (regions, the export), the test through a TestClient
    with serve(intake_app(settings, engine=database.engine, clock=clock)) as intake_url, \
            TestClient(intake_app(settings, engine=database.engine, clock=clock), headers=access.headers) as intake:
        worker_settings = settings.model_copy(update={"intake_url": intake_url})
        with Session(scoring_db.engine) as s:
            store.save_counties(s, intake.get("/v1/regions", params={"level": "county"}).json())
            s.commit()
        worker = Worker(worker_settings, scoring_db.engine, shipped(), clock=clock)
        threads = [threading.Thread(target=r.run, args=(stop,), daemon=True) for r in relays]
        threads.append(threading.Thread(target=worker.run, args=(stop,), daemon=True))
        for t in threads:
            t.start()
        with TestClient(scoring_app(settings, engine=scoring_db.engine), headers=access.headers) as scoring:
            try:
                yield intake, scoring, own_broker
            finally:
                stop.set()
                for t in threads:
                    t.join(30)
                worker.close()
                for r in relays:
                    r.close()



def score(scoring, code, year=2026):
    r = scoring.get(f"/v1/scores/{code}", params={"year": year})
    return r.json() if r.status_code == 200 else None


def test_events_become_scores_and_time_and_disputes_move_them(system, clock):
    intake, scoring, _ = system
    late = f.finding(deadline=f.deadline(10))
    disputed = f.finding(severity="critical", indicator="road")
    assert intake.post("/v1/events", json=f.inspection(late, disputed)).status_code == 201
    s = wait_for(lambda: score(scoring, "513431"))
    assert s["components"]["inspections"] == 100 - 5.0 - 12.0 and s["level"] == "county"
    assert s["league"] == "in_poverty" and s["parent_code"] == "513400"
    prefecture = wait_for(lambda: score(scoring, "513400"))
    assert prefecture["level"] == "prefecture" and prefecture["total"] == s["total"]
    assert [x["region_code"] for x in scoring.get("/v1/scores", params={"parent": "513400", "year": 2026}).json()] == [
        "513431"]

    # a deadline passes: the next tick lowers the score with no new event
    clock.now = f.T0 + timedelta(days=15)
    lowered = wait_for(lambda: (x := score(scoring, "513431")) and x["components"]["rectification"] < 100 and x)
    assert lowered["components"]["rectification"] == 100 - 5 * 0.5  # deadline 03-12, now 03-17 in Beijing
    assert lowered["cause"] == "deadline"

    # a dispute that ends withdrawn restores the points
    intake.post("/v1/events", json=f.step("finding.disputed", disputed["finding_id"], at=f.T0 + timedelta(days=3)))
    intake.post("/v1/events", json=f.step("finding.withdrawn", disputed["finding_id"], at=f.T0 + timedelta(days=4)))
    restored = wait_for(lambda: (x := score(scoring, "513431")) and x["components"]["inspections"] == 95.0 and x)
    assert restored["total"] > s["total"]

    lines = scoring.get("/v1/scores/513431/explanation", params={"year": 2026}).json()["items"]
    lost = {c: -sum(x["points"] for x in lines if x["component"] == c) for c in ("inspections", "rectification")}
    assert lost == {"inspections": 5.0, "rectification": 2.5}
    assert {x["rule"] for x in lines} >= {"inspections.findings", "rectification.overdue", "finding.withdrawn"}
    points = scoring.get("/v1/inspector-points", params={"team_id": "team-1"}).json()
    assert points["findings_credited"] == 1  # the late finding stood past its deadline; the withdrawn one did not


def test_scores_are_published_with_previous_totals(system):
    intake, scoring, broker = system
    event = f.inspection(f.finding())
    intake.post("/v1/events", json=event, headers={"X-Request-ID": "req-scale-1"})
    wait_for(lambda: score(scoring, "513431"))
    messages = read_messages(broker.bootstrap_servers, topics.SCORING_SCORES,
                             lambda ms: any(m.key == b"513431" for m in ms))
    county = [m for m in messages if m.key == b"513431"][-1]
    value = orjson.loads(county.value)
    assert value["total"] == score(scoring, "513431")["total"] and value["previous_total"] is None
    assert value["policy_version"] == "default-v3" and value["level"] == "county"
    # the request that brought the event in is named on the score it caused (one id across hops)
    assert headers(county)["request_id"] == "req-scale-1" and headers(county)["event_id"] == event["event_id"]


def test_poison_messages_are_dead_lettered_and_later_events_still_scored(system):
    intake, scoring, broker = system
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers)
    bad = [b"{not json", orjson.dumps({"event_id": f.uid(), "type": "inspection.exploded", "sequence": 1,
                                       "recorded_at": "2026-01-01T00:00:00Z"}),
           orjson.dumps({**f.daily_check(), "schema_version": 7, "sequence": 2,
                         "recorded_at": "2026-01-01T00:00:00Z"})]
    for value in bad:
        producer.send(topics.INTAKE_EVENTS, key=b"513431", value=value)
    producer.flush()
    producer.close()
    intake.post("/v1/events", json=f.inspection(f.finding(severity="minor")))
    wait_for(lambda: score(scoring, "513431"))
    dead = read_messages(broker.bootstrap_servers, "kaohe.intake.events.v1.dlt", lambda ms: len(ms) >= 3)
    assert len(dead) == 3
    assert {m.value for m in dead} == set(bad)
    h = headers(dead[0])
    assert h["original_topic"] == topics.INTAKE_EVENTS and "original_offset" in h and h["error"]


def test_unknown_region_is_404_problem(system):
    _, scoring, _ = system
    r = scoring.get("/v1/scores/999999", params={"year": 2026})
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    assert scoring.get("/v1/scores/513431", params={"year": 1999}).status_code == 422


@NO_TICK
def test_policy_versions_are_validated_and_activating_one_recomputes_every_score(system):
    intake, scoring, _ = system
    intake.post("/v1/events", json=f.inspection(f.finding(severity="major")))
    before = wait_for(lambda: score(scoring, "513431"))
    assert before["policy_version"] == "default-v3" and before["components"]["inspections"] == 95.0

    policy = scoring.get("/v1/policies/default-v3").json()
    bad = {**policy, "id": "default-v4", "version": 4,
           "weights": {**policy["weights"], "exited": {**policy["weights"]["exited"], "inspections": 0.9}}}
    r = scoring.post("/v1/policies", json=bad)
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert any("sum to 1" in e["message"] for e in r.json()["errors"])
    # a time zone the engine cannot load, and an id that does not match the version: each named
    # at its own field (an unknown zone was accepted, and activating it stopped the worker)
    r = scoring.post("/v1/policies", json={**policy, "id": "default-v5", "version": 4, "timezone": "Mars/Olympus"})
    assert r.status_code == 422, r.text
    assert {e["field"] for e in r.json()["errors"]} == {"timezone"}
    r = scoring.post("/v1/policies", json={**policy, "id": "default-v5", "version": 4})
    assert r.status_code == 422 and [e["field"] for e in r.json()["errors"]] == ["id"], r.text
    assert [(p["id"], p["active"]) for p in scoring.get("/v1/policies").json()] == [
        ("default-v1", False), ("default-v2", False), ("default-v3", True)]
    assert scoring.post("/v1/policies", json=policy).status_code == 409  # an existing id

    stricter = {**policy, "id": "default-v4", "version": 4,
                "inspections": {**policy["inspections"], "severity": {"minor": 2, "major": 10, "critical": 20}}}
    assert scoring.post("/v1/policies", json=stricter).status_code == 201
    assert score(scoring, "513431")["policy_version"] == "default-v3"  # adding is not activating
    assert scoring.post("/v1/policies/default-v4/activate").status_code == 202
    after = wait_for(lambda: (x := score(scoring, "513431")) and x["policy_version"] == "default-v4" and x,
                     timeout=20)
    assert after["components"]["inspections"] == 90.0
    lines = scoring.get("/v1/scores/513431/explanation", params={"year": 2026}).json()["items"]
    assert {x["policy_version"] for x in lines} == {"default-v4"}
    assert [p["id"] for p in scoring.get("/v1/policies").json() if p["active"]] == ["default-v4"]
    assert scoring.post("/v1/policies/nope-v1/activate").status_code == 404


@NO_TICK
def test_a_rebuild_request_recomputes_every_score_from_intakes_export(system, scoring_db, database, clock):
    intake, scoring, _ = system
    clock.now = f.T0 + timedelta(days=3)
    a = f.finding(severity="major")
    for event in (f.inspection(a), f.daily_check(items_failed=2), f.step("rectification.reported", a["finding_id"]),
                  f.step("rectification.rejected", a["finding_id"], at=f.T0 + timedelta(days=2))):
        r = intake.post("/v1/events", json=event)
        assert r.status_code == 201, r.json()
    good = wait_for(lambda: (x := score(scoring, "513431")) and x["components"]["rectification"] < 100
                    and x["components"]["daily_management"] < 100 and x)
    # the read model drifts from the store of record (a bad restore, a manual edit)
    with Session(scoring_db.engine) as s:
        s.execute(update(ScoreRow).where(ScoreRow.region_code == "513431").values(total=1.0))
        s.execute(delete(ExplanationBatch))
        s.execute(delete(AppliedBatch))
        s.commit()
    assert score(scoring, "513431")["total"] == 1.0

    r = scoring.post("/v1/rebuilds")
    assert r.status_code == 202 and r.json()["status"] == "queued"
    done = wait_for(lambda: (x := scoring.get(r.headers["Location"]).json())["status"] in ("done", "failed") and x,
                    timeout=20)
    assert done["status"] == "done" and done["events"] == 4 and done["error"] is None
    assert score(scoring, "513431")["total"] == good["total"]
    assert_matches_clean_recomputation(database.engine, scoring_db.engine)
    with Session(scoring_db.engine) as s:
        assert store.applied_count(s) == 4
    assert scoring.get("/v1/rebuilds/999").status_code == 404


def test_a_broker_that_lost_its_log_is_caught_up_from_intake(database, scoring_db, tmp_path, access, clock, own_broker,
                                                            monkeypatch):
    """tansu keeps nothing on restart: events published but not yet consumed are gone from the
    log, and the new log restarts at offset 0. The worker notices (the topic id stored with its
    offset is not the new log's: no reading of the partition to find out, which on a log shorter
    than the offset waited 10 s a partition) and applies what it missed from intake's export, in order."""
    probed = []
    monkeypatch.setattr(worker_module, "same_log", lambda *args: probed.append(args))
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=own_broker.bootstrap_servers, topic_partitions=1,
                        service_token=access.admin, relay_idle_ms=10, scoring_tick_s=0.2, **QUICK_GROUP)
    clock.now = f.T0 + timedelta(days=3)
    relay_stop = threading.Event()
    relay = intake_relay(settings, engine=database.engine)
    relay_thread = threading.Thread(target=relay.run, args=(relay_stop,), daemon=True)

    def start_worker():
        stop = threading.Event()
        worker = Worker(worker_settings, scoring_db.engine, shipped(), clock=clock)
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        return worker, stop, thread

    def stop_worker(worker, stop, thread):
        stop.set()
        thread.join(30)
        worker.close()

    def applied():
        with Session(scoring_db.engine) as s:
            return store.applied_count(s)

    with serve(intake_app(settings, engine=database.engine, clock=clock)) as url, \
            TestClient(intake_app(settings, engine=database.engine, clock=clock), headers=access.headers) as intake:
        worker_settings = settings.model_copy(update={"intake_url": url})
        relay_thread.start()
        try:
            running = start_worker()
            first = f.finding(severity="major")
            assert intake.post("/v1/events", json=f.inspection(first)).status_code == 201
            wait_for(lambda: applied() == 1)
            stop_worker(*running)

            # published while the worker is away, then lost with the broker's memory
            for event in (f.step("rectification.reported", first["finding_id"]),
                          f.step("rectification.rejected", first["finding_id"], at=f.T0 + timedelta(days=2)),
                          f.inspection(f.finding(severity="critical", indicator="housing"))):
                assert intake.post("/v1/events", json=event).status_code == 201
            read_messages(own_broker.bootstrap_servers, topics.INTAKE_EVENTS, lambda ms: len(ms) >= 4)
            own_broker.stop()
            own_broker.start()
            # the new log's offset 0
            assert intake.post("/v1/events", json=f.daily_check(items_failed=3)).status_code == 201
            read_messages(own_broker.bootstrap_servers, topics.INTAKE_EVENTS, lambda ms: len(ms) >= 1)

            with Session(scoring_db.engine) as s:
                old_log = s.execute(select(ConsumerOffset.topic_id)).scalar_one()
            assert old_log is not None
            running = start_worker()
            wait_for(lambda: applied() == 5)
            wait_for(lambda: (s := score_row(scoring_db.engine)) and s.cause != "counties" and
                     orjson.loads(s.components)["daily_management"] < 100)
            stop_worker(*running)
        finally:
            relay_stop.set()
            relay_thread.join(30)
            relay.close()
    assert probed == []
    with Session(scoring_db.engine) as s:  # the offset of the new log's event, stored with the new log's id
        assert s.execute(select(ConsumerOffset.topic_id)).scalar_one() not in {None, old_log}
    assert_matches_clean_recomputation(database.engine, scoring_db.engine)
    # the scores log was lost too: every current score was sent again, with nothing moved in it
    t = ScoringOutbox.__table__
    with Session(scoring_db.engine) as s:
        rows = {(r.region_code, r.year): r for r in s.execute(select(ScoreRow)).scalars()}
        resent = [orjson.loads(v) for v, h in s.execute(select(t.c.value, t.c.headers).where(
            t.c.topic == topics.SCORING_SCORES)).all() if "resent" in orjson.loads(h)]
    assert sorted((m["region_code"], m["year"]) for m in resent) == sorted(rows) == [("513400", 2026),
                                                                                    ("513431", 2026)]
    for m in resent:
        row = rows[(m["region_code"], m["year"])]
        assert (m["total"], m["grade"], m["previous_total"], m["previous_grade"]) == (
            row.total, row.grade, row.total, row.grade)


def score_row(engine, code="513431", year=2026):
    with Session(engine) as s:
        return s.get(ScoreRow, (code, year))


def test_the_worker_waits_for_its_database_at_start(tmp_path, access, broker, clock):
    """A worker started before its database is reachable retries instead of exiting."""
    path = tmp_path / "not-yet" / "scoring.db"
    db = make_engine(f"sqlite:///{path}")
    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=broker.bootstrap_servers,
                        service_token=access.admin, intake_url="http://127.0.0.1:9")
    worker = Worker(settings, db, shipped(), clock=clock)
    stop, started = threading.Event(), []
    thread = threading.Thread(target=lambda: started.append(worker.start(stop)), daemon=True)
    thread.start()
    try:
        time.sleep(1.5)
        assert thread.is_alive() and not started  # still retrying
        path.parent.mkdir()
        upgrade("scoring", db)
        with Session(db) as s:
            store.save_counties(s, [{"code": "513431", "parent_code": "513400", "baseline_status": "in_poverty"}])
            s.commit()
        thread.join(60)
        assert started == [True] and worker.consumer is not None
    finally:
        stop.set()
        thread.join(15)
        worker.close()
        db.dispose()


Message = namedtuple("Message", "topic partition offset value headers")


def on_partition_0(record, offset: int) -> Message:
    """`record` as intake publishes it, read from partition 0 at `offset`."""
    return Message(topics.INTAKE_EVENTS, 0, offset,
                   registry.encode_record(record.sequence, record.recorded_at, registry.to_json_dict(record.event)), [])


def database_away(*args, **kwargs):
    """Any database call (a write, a look) while the database is away."""
    raise OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))


def one_county_worker(scoring_db, clock) -> Worker:
    """A worker (no consumer) owning the one partition of county 513431, engine built, clock ticked."""
    with Session(scoring_db.engine) as s:
        store.save_counties(s, [{"code": "513431", "baseline_status": "in_poverty"}])
        s.commit()
    worker = Worker(Settings(), scoring_db.engine, shipped(), clock=clock)
    worker.restore()
    worker.partitions, worker.partition_count = frozenset({0}), 1
    worker.tick()
    return worker


def test_a_rebuild_that_fails_midway_changes_nothing_and_the_worker_goes_on(scoring_db, clock):
    """The worker drops its engine while it recomputes (one engine in memory at a time): when
    intake's export breaks off midway, the request records the error, no stored score changes,
    and the worker restores its engine and keeps scoring."""
    import httpx

    from services.scoring.models import RebuildRequest
    from tests.scoring import factories as sf

    records = [sf.inspection(sf.finding("F-1", severity="critical")), sf.step("rectification.reported", "F-1")]
    clock.now = sf.T0 + timedelta(days=60)  # the finding is overdue: time matters to the score
    worker = one_county_worker(scoring_db, clock)
    worker.handle([on_partition_0(records[0], 0)])
    with Session(scoring_db.engine) as s:
        before = {(r.region_code, r.year): (r.total, r.components) for r in s.execute(select(ScoreRow)).scalars()}
        s.add(RebuildRequest(requested_at=clock.now))
        s.commit()
    assert before

    def broken_export():
        yield on_partition_0(records[0], 0).value.decode()
        raise httpx.ReadError("intake went away")

    worker.export_lines = broken_export
    worker.tick()  # serves the rebuild request: it fails midway
    with Session(scoring_db.engine) as s:
        request = s.execute(select(RebuildRequest)).scalar_one()
        after = {(r.region_code, r.year): (r.total, r.components) for r in s.execute(select(ScoreRow)).scalars()}
    assert request.done_at is not None and "intake went away" in request.error
    assert after == before
    assert worker.scorer is not None and len(worker.scorer.applied) == 1
    worker.handle([on_partition_0(records[1], 1)])
    with Session(scoring_db.engine) as s:
        assert store.applied_count(s) == 2


def test_a_rebuild_a_database_outage_broke_off_is_taken_up_again_by_the_next_tick(scoring_db, clock, monkeypatch):
    """The database goes away while the worker recomputes for a rebuild request: the tick is put
    off and the request stays claimed by this worker, which takes it up again at its next tick
    (before, the claim lapsed only after an hour: the request waited that long, shown as started)."""
    from services.scoring.models import RebuildRequest
    from services.scoring.worker import TickPutOff
    from tests.scoring import factories as sf

    record = sf.inspection(sf.finding("F-1", severity="critical"))
    clock.now = sf.T0 + timedelta(days=1)
    worker = one_county_worker(scoring_db, clock)
    worker.handle([on_partition_0(record, 0)])
    with Session(scoring_db.engine) as s:
        s.add(RebuildRequest(requested_at=clock.now))
        s.commit()
    worker.export_lines = lambda: iter([on_partition_0(record, 0).value.decode()])
    recompute = worker.recompute

    monkeypatch.setattr(worker, "recompute", database_away)  # away midway
    with pytest.raises(TickPutOff):
        worker.tick()
    with Session(scoring_db.engine) as s:
        request = s.execute(select(RebuildRequest)).scalar_one()
    assert request.started_at is not None and request.done_at is None
    monkeypatch.setattr(worker, "recompute", recompute)  # the database answers again
    clock.now += timedelta(minutes=1)
    worker.tick()
    with Session(scoring_db.engine) as s:
        request = s.execute(select(RebuildRequest)).scalar_one()
    served_at = clock.now
    assert request.done_at == served_at and (request.events, request.error) == (1, None)
    assert worker.claimed_rebuilds == set()
    clock.now += timedelta(minutes=1)
    worker.tick()  # served: not taken up again
    with Session(scoring_db.engine) as s:
        assert s.execute(select(RebuildRequest)).scalar_one().done_at == served_at


def test_a_placed_worker_looks_for_rebuild_requests_and_policy_switches_about_every_second(scoring_db, clock,
                                                                                          monkeypatch):
    """`asked_lately`, which `run` ticks on: nothing before the group places the worker, then a
    pending request or a newly active policy, looked up at most once a second; a database that does
    not answer is not an error here (the engine stays, the next write meets the outage)."""
    from services.scoring import policy_store
    from services.scoring.models import RebuildRequest

    worker = one_county_worker(scoring_db, clock)
    with Session(scoring_db.engine) as s:
        s.add(RebuildRequest(requested_at=clock.now))
        s.commit()
    assert worker.owner is None and not worker.asked_lately()  # not placed yet
    worker.owner = "me"
    assert worker.asked_lately()
    assert not worker.asked_lately()  # looked a moment ago
    worker.last_asked = 0.0
    worker.tick()  # serves the request
    assert not worker.asked_lately()

    worker.last_asked = 0.0
    with Session(scoring_db.engine) as s:
        policy_store.add(s, shipped().model_copy(update={"id": "default-v4", "version": 4}))
        policy_store.activate(s, "default-v4", Settings().scoring_policy)
        s.commit()
    assert worker.asked_lately()
    worker.last_asked = 0.0
    worker.tick()  # rescored under it
    assert worker.policy.id == "default-v4" and not worker.asked_lately()

    monkeypatch.setattr(policy_store, "active_id", database_away)
    worker.last_asked = 0.0
    assert not worker.asked_lately() and worker.scorer is not None


def test_a_policy_switch_another_worker_made_while_this_one_waited_is_not_made_again(scoring_db, clock):
    """Several workers see a newly activated policy within a second of each other: the first to
    take the writers' lock rescores everything; one that decided to switch before that commit
    finds the scores under the policy once it holds the lock, and only restores its engine."""
    from services.scoring import policy_store
    from services.scoring.models import WorkerClock
    from tests.scoring import factories as sf

    first = one_county_worker(scoring_db, clock)
    first.handle([on_partition_0(sf.inspection(sf.finding("F-1", severity="major")), 0)])
    second = Worker(Settings(), scoring_db.engine, shipped(), clock=clock)
    second.restore()
    second.partitions, second.partition_count = frozenset({0}), 1
    with Session(scoring_db.engine) as s:
        policy_store.add(s, shipped().model_copy(update={"id": "default-v4", "version": 4}))
        policy_store.activate(s, "default-v4", Settings().scoring_policy)
        s.commit()
    first.switch_policy("default-v4")  # from its own applied events (no intake here)
    def stored() -> dict:
        with Session(scoring_db.engine) as s:
            rows = s.execute(select(ScoreRow)).scalars()
            return {(r.region_code, r.year): (r.total, r.policy_id, r.as_of) for r in rows}

    with Session(scoring_db.engine) as s:
        switched = s.get(WorkerClock, 1).generation
    scores = stored()
    assert scores and {policy for _, policy, _ in scores.values()} == {"default-v4"}

    def unread():
        pytest.fail("the switch was made: nothing is to be read")
        yield

    second.export_lines = unread
    second.switch_policy("default-v4")  # decided before the first committed
    with Session(scoring_db.engine) as s:
        assert s.get(WorkerClock, 1).generation == switched  # no second recomputation
    assert stored() == scores
    assert second.policy.id == "default-v4" and second.generation == switched
    assert len(second.scorer.applied) == 1


def test_a_worker_started_with_another_configured_policy_rescores_and_announces_every_score(scoring_db, clock):
    """KAOHE_SCORING_POLICY changed (default-v1 to the default, default-v3): the restarted worker
    builds its engine under the policy the stored scores used, sees at its first tick that the
    configured one differs, and rescores every score and explanation under it, announcing each, as an
    activation over the API does: no POST /v1/rebuilds is needed."""
    import httpx

    from services.scoring.models import WorkerClock
    from tests.scoring import factories as sf

    clock.now = sf.T0 + timedelta(hours=1)  # before the finding's deadline: the visit alone moves the score
    with Session(scoring_db.engine) as s:
        store.save_counties(s, [{"code": "513431", "baseline_status": "in_poverty"}])
        s.commit()
    before = Worker(Settings(scoring_policy="default-v1"), scoring_db.engine, shipped("default-v1"), clock=clock)
    before.restore()
    before.partitions, before.partition_count = frozenset({0}), 1
    before.tick()
    # 10 villages, one household in each: v1 samples 10 households (the floor: 50), v2 100
    visit = sf.inspection(sf.finding("F-1", severity="major", indicator="road"), households=10, villages=10)
    before.handle([on_partition_0(visit, 0)])
    before.close()
    row = score_row(scoring_db.engine)
    assert (row.policy_id, orjson.loads(row.components)["inspections"]) == ("default-v1", 90.0)

    settings = Settings()  # the default, as a deployment that never set it
    after = Worker(settings, scoring_db.engine, shipped(settings.scoring_policy), clock=clock)  # as main() builds it

    def intake_away():
        raise httpx.ConnectError("no intake in this test: the worker rescores its applied events")
        yield

    after.export_lines = intake_away
    try:
        after.restore()
        assert after.policy.id == "default-v1"  # the stored scores' policy, until it rescores
        after.partitions, after.partition_count = frozenset({0}), 1
        with Session(scoring_db.engine) as s:
            announced = s.execute(select(func.count()).select_from(ScoringOutbox)).scalar_one()
        after.tick()
        assert after.policy.id == "default-v3"
        row = score_row(scoring_db.engine)
        assert (row.policy_id, orjson.loads(row.components)["inspections"]) == ("default-v3", 95.0)
        with Session(scoring_db.engine) as s:
            assert s.get(WorkerClock, 1).policy_id == "default-v3"
            lines = [orjson.loads(b.lines) for b in s.execute(select(ExplanationBatch)).scalars()
                     if b.policy_id == "default-v3"]
            messages = [orjson.loads(m.value) for m in s.execute(select(ScoringOutbox).where(
                ScoringOutbox.id > announced, ScoringOutbox.topic == topics.SCORING_SCORES)).scalars()]
        assert [line[:3] for batch in lines for line in batch] == [["inspections", -5.0, "inspections.findings"]]
        assert {(m["region_code"], m["policy_version"]) for m in messages} == {("513431", "default-v3"),
                                                                             ("513400", "default-v3")}
    finally:
        after.close()


def test_a_write_that_fails_in_flight_is_raised_and_the_engine_is_rebuilt_from_what_is_stored(scoring_db, clock,
                                                                                            monkeypatch):
    """A batch is written while the next is applied: when that write fails, the engine already
    holds the batch. The failure comes out of the next `submit`/`settle`; the engine rebuilt from
    the database lacks the batch, which is then applied and stored once."""
    from tests.scoring import factories as sf

    records = [sf.inspection(sf.finding("F-1", severity="critical")), sf.step("rectification.reported", "F-1")]
    worker = one_county_worker(scoring_db, clock)
    worker.submit([on_partition_0(records[0], 0)])
    persist = store.persist
    monkeypatch.setattr(store, "persist", database_away)
    worker.submit([on_partition_0(records[1], 1)])  # the first is written meanwhile
    assert len(worker.scorer.applied) == 2  # applied in memory, its write in flight
    with pytest.raises(OperationalError):
        worker.settle()
    monkeypatch.setattr(store, "persist", persist)
    with Session(scoring_db.engine) as s:
        assert store.applied_count(s) == 1
        assert s.execute(select(ConsumerOffset.next_offset)).scalar_one() == 1
    worker.restore()  # what run() does after the error (resync)
    assert len(worker.scorer.applied) == 1
    worker.handle([on_partition_0(records[1], 1)])
    with Session(scoring_db.engine) as s:
        assert store.applied_count(s) == 2
        assert s.execute(select(ConsumerOffset.next_offset)).scalar_one() == 2
        stored = {r.region_code: r.total for r in s.execute(select(ScoreRow)).scalars() if r.level == "county"}
    fresh = store.rebuild(scoring_db.engine, shipped(), {"513431": "in_poverty"})
    assert stored == {"513431": fresh.score("513431", records[0].event.occurred_at.year).total}
    assert worker.scorer.score("513431", records[0].event.occurred_at.year) == \
        fresh.score("513431", records[0].event.occurred_at.year)
    worker.close()


def test_a_failed_write_in_flight_settled_quietly_drops_the_engine(scoring_db, clock, monkeypatch):
    """Settled by a rebalance or a resync (`quietly`): the error is logged and the engine, which
    holds the unstored batch, is dropped so that it is built again before anything is applied."""
    from tests.scoring import factories as sf

    record = sf.inspection(sf.finding("F-1"))
    worker = one_county_worker(scoring_db, clock)
    monkeypatch.setattr(store, "persist",
                        lambda session, prepared, stored=None: (_ for _ in ()).throw(store.Stale("claimed")))
    worker.submit([on_partition_0(record, 0)])
    assert worker.settle(quietly=True) == 0
    assert worker.scorer is None and worker.in_flight is None
    worker.close()


def test_a_recomputation_longer_than_the_poll_interval_keeps_the_worker_in_its_group(tmp_path, clock, own_broker,
                                                                                     monkeypatch):
    """A rebuild's final write and commit take tens of seconds at a million events, with no point
    inside them to poll from. Past max.poll.interval the group dropped the worker, which then
    spent about 20 s rejoining with nothing scored. The work now runs on the writer thread while
    the worker polls: the group keeps it, and no rebalance follows. (On SQLite only: what is tested
    is the group; a recomputation on the writer thread runs on both backends in
    test_a_rebuild_request_recomputes_every_score_from_intakes_export.)"""
    from tests.scoring import factories as sf

    with fresh_database("sqlite", tmp_path, "scoring") as scoring_db:
        recompute_outlasting_the_poll_interval(scoring_db, clock, own_broker, monkeypatch, sf)


def test_a_rebuild_asked_before_the_group_places_the_worker_waits_for_its_partitions(tmp_path, clock, own_broker):
    """A rebuild request pending when the worker starts is served once the group has assigned the
    worker its partitions (here every one), so the every-county engine it builds is the one kept:
    not built before the assignment, dropped, and its share built again from the stored events
    (the late-assignment path, 320 MB at a million events: docs/performance.md). On SQLite only:
    what is tested is the order of the group and the tick; the export is a stand-in here and real
    in test_a_rebuild_request_recomputes_every_score_from_intakes_export."""
    from tests.scoring import factories as sf

    with fresh_database("sqlite", tmp_path, "scoring") as scoring_db:
        with Session(scoring_db.engine) as s:
            store.save_counties(s, [{"code": "513431", "baseline_status": "in_poverty"}])
            s.add(RebuildRequest(requested_at=clock()))
            s.commit()
        settings = Settings(kafka_bootstrap_servers=own_broker.bootstrap_servers, topic_partitions=2,
                            scoring_tick_s=3600, intake_url=f"http://127.0.0.1:{free_port()}")  # counties cached
        worker = Worker(settings, scoring_db.engine, shipped(), clock=clock)
        seen = []  # (what, placed by the group, the partitions it holds)
        line = on_partition_0(sf.inspection(sf.finding("F-1")), 0).value.decode()
        worker.export_lines = lambda: seen.append(("export", worker.owner is not None, sorted(worker.partitions))) \
            or iter([line])
        restore = worker.restore
        worker.restore = lambda: seen.append(("restore", worker.owner is not None, sorted(worker.partitions))) \
            or restore()
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
        thread.start()
        try:
            def done() -> RebuildRequest | None:
                with Session(scoring_db.engine) as s:
                    return s.execute(select(RebuildRequest).where(RebuildRequest.done_at.is_not(None))).scalar()
            request = wait_for(done, timeout=60, what="the rebuild request served")
        finally:
            stop.set()
            thread.join(30)
            worker.close()
        assert (request.events, request.error) == (1, None)
        assert seen == [("restore", False, []), ("export", True, [0, 1])]


def recompute_outlasting_the_poll_interval(scoring_db, clock, own_broker, monkeypatch, sf) -> None:
    with Session(scoring_db.engine) as s:
        store.save_counties(s, [{"code": "513431", "baseline_status": "in_poverty"}])
        s.commit()
    settings = Settings(kafka_bootstrap_servers=own_broker.bootstrap_servers, topic_partitions=1,
                        consumer_max_poll_interval_ms=1500, consumer_session_timeout_ms=6000, scoring_tick_s=3600)
    worker = Worker(settings, scoring_db.engine, shipped(), clock=clock)
    assignments = []
    on_assigned = worker.on_assigned
    worker.on_assigned = lambda partitions: (assignments.append(sorted(tp.partition for tp in partitions)),
                                             on_assigned(partitions))
    try:
        worker.restore()
        worker.connect()
        wait_for(lambda: worker.consumer.poll(timeout_ms=100) is not None and assignments, timeout=60)
        worker.restore()  # the engine of the assigned partition, as `run` builds it
        worker.tick()
        worker.handle([on_partition_0(sf.inspection(sf.finding("F-1", severity="major")), 0)])
        write = store.write

        def slow_write(*args, **kwargs):  # the final write of a recomputation at a million events
            time.sleep(4.0)  # the poll interval, plus a heartbeat interval (when the check runs), and more
            return write(*args, **kwargs)

        monkeypatch.setattr(store, "write", slow_write)
        assert worker.recompute(worker.policy.id, from_intake=False) == 1
        monkeypatch.setattr(store, "write", write)
        deadline = time.monotonic() + 4.0  # a dropped member rejoins on its next polls
        while time.monotonic() < deadline:
            worker.consumer.poll(timeout_ms=200)
        assert assignments == [[0]], "the group dropped the worker during the recomputation"
        with Session(scoring_db.engine) as s:
            assert store.applied_count(s) == 1
    finally:
        worker.close()


def test_batches_whose_write_failed_while_the_database_was_away_are_written_again_without_a_rebuild(
        scoring_db, clock, monkeypatch):
    """The database goes away while batch 1 is written and batch 2 applied: both stay with the
    worker, are written in order once it answers, and the engine is not rebuilt (at a million
    events that rebuild took 40 s with nothing scored)."""
    from tests.scoring import factories as sf

    records = [sf.inspection(sf.finding("F-1", severity="critical")), sf.step("rectification.reported", "F-1"),
               sf.step("rectification.verified", "F-1")]
    worker = one_county_worker(scoring_db, clock)
    persist, attempts = store.persist, []

    def database_away(session, prepared, stored=None):
        attempts.append(prepared)
        raise OperationalError("INSERT", {}, Exception("server closed the connection"))

    monkeypatch.setattr(store, "persist", database_away)
    worker.submit([on_partition_0(records[0], 0)])
    with pytest.raises(OperationalError):
        worker.submit([on_partition_0(records[1], 1)])
    assert len(worker.unwritten) == 2 and len(worker.scorer.applied) == 2
    with pytest.raises(OperationalError):
        worker.write_unwritten()  # still away: nothing lost, nothing reordered
    assert [p.batch.offsets for p in worker.unwritten] == [
        {(topics.INTAKE_EVENTS, 0): (n, str(r.event.event_id), None)} for n, r in ((1, records[0]), (2, records[1]))]
    monkeypatch.setattr(store, "persist", persist)
    rebuilds = []
    monkeypatch.setattr(store, "rebuild", lambda *a, **k: rebuilds.append(a))
    worker.write_unwritten()  # what run() does once the database answers
    worker.handle([on_partition_0(records[2], 2)])
    assert rebuilds == [] and worker.unwritten == [] and len(attempts) == 2  # batch 1 in flight, then retried
    with Session(scoring_db.engine) as s:
        assert [orjson.loads(r)["sequence"] for r in store.stored_records(scoring_db.engine)] == \
            [r.sequence for r in records]
        assert s.execute(select(ConsumerOffset.next_offset)).scalar_one() == 3
        stored = {r.region_code: r.total for r in s.execute(select(ScoreRow)).scalars() if r.level == "county"}
        explained = len(list(store.explanation_lines(s)))
    monkeypatch.undo()
    fresh = store.rebuild(scoring_db.engine, shipped(), {"513431": "in_poverty"})
    year = records[0].event.occurred_at.year
    assert stored == {"513431": fresh.score("513431", year).total}
    assert worker.scorer.score("513431", year) == fresh.score("513431", year)
    assert explained > 0


def test_a_tick_the_database_puts_off_is_kept_and_written_again_not_rebuilt(scoring_db, clock, monkeypatch):
    """A tick that meets the database away is put off (`TickPutOff`), never a rebuild: before the
    engine moves (its first look, for a new policy, fails), nothing changes; once it has moved (a
    deadline passed, a score lowered), its rows stay with the worker, as a batch's do, and `run`
    writes them once the database answers, in order before the next batch. (Before, its error sent
    the worker back to what was stored, a rebuild: the broker test below,
    `..._costs_the_running_worker_a_retry_not_a_rebuild`, failed so whenever one of its 0.2 s ticks
    met the outage before a batch did.)"""
    from services.scoring import policy_store
    from services.scoring.worker import TickPutOff
    from tests.scoring import factories as sf

    clock.now = sf.T0 + timedelta(hours=1)
    worker = one_county_worker(scoring_db, clock)
    records = [sf.inspection(sf.finding("F-1", deadline=sf.T0.date() + timedelta(days=10))),
               sf.step("rectification.reported", "F-1", at=sf.T0 + timedelta(days=20))]
    worker.handle([on_partition_0(records[0], 0)])
    persist, rebuilds = store.persist, []
    monkeypatch.setattr(store, "rebuild", lambda *a, **k: rebuilds.append(a))
    clock.now = sf.T0 + timedelta(days=15)  # the deadline passed five days ago
    with monkeypatch.context() as away:
        away.setattr(policy_store, "active_id", database_away)
        with pytest.raises(TickPutOff):
            worker.tick()
    assert worker.unwritten == [] and worker.scorer.as_of == sf.T0 + timedelta(hours=1)  # the engine has not moved
    monkeypatch.setattr(store, "persist", database_away)
    with pytest.raises(TickPutOff):
        worker.tick()
    assert len(worker.unwritten) == 1 and worker.unwritten[0].clock_moved and worker.scorer is not None
    with pytest.raises(TickPutOff):
        worker.tick()  # still away: the kept tick is tried first, and stays
    assert len(worker.unwritten) == 1
    monkeypatch.setattr(store, "persist", persist)
    worker.write_unwritten()  # what run() does once the database answers
    with Session(scoring_db.engine) as s:
        row = s.execute(select(ScoreRow).where(ScoreRow.region_code == "513431")).scalar_one()
    assert row.cause == "deadline" and orjson.loads(row.components)["rectification"] < 100
    worker.handle([on_partition_0(records[1], 1)])  # the next batch goes on from the written tick
    assert rebuilds == [] and worker.unwritten == []
    monkeypatch.undo()
    fresh = store.rebuild(scoring_db.engine, shipped(), {"513431": "in_poverty"})
    assert fresh.as_of == clock.now
    assert worker.scorer.score("513431", 2026) == fresh.score("513431", 2026)


def test_a_worker_that_is_reassigned_while_batches_are_unwritten_drops_them_and_rebuilds(scoring_db, clock,
                                                                                        monkeypatch):
    """Batches not yet written when the worker goes back to what is stored (a rebalance, a
    refused write): the engine that holds them is dropped with them, and rebuilt from the database."""
    from tests.scoring import factories as sf

    worker = one_county_worker(scoring_db, clock)

    def database_away(session, prepared, stored=None):
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(store, "persist", database_away)
    worker.submit([on_partition_0(sf.inspection(sf.finding("F-1")), 0)])
    with pytest.raises(OperationalError):
        worker.settle()
    monkeypatch.undo()
    assert len(worker.unwritten) == 1 and worker.scorer is not None
    worker.settle(quietly=True)  # as on_assigned, reseek and restore do
    assert worker.unwritten == [] and worker.scorer is None
    worker.restore()
    assert len(worker.scorer.applied) == 0


def test_a_database_away_for_a_moment_costs_the_running_worker_a_retry_not_a_rebuild(system, scoring_db, database,
                                                                                    monkeypatch):
    """Over the broker, `run` itself: the database goes away twice, never costing a rebuild of
    the engine. First its reads fail (a tick's look for a new policy: the tick is put off). Then
    its writes fail while events arrive and the 0.2 s tick runs: the worker backs off, writes the
    batches and ticks it holds once the database answers, and scores on. Every score then equals a
    clean recomputation from intake's store."""
    from services.intake.store.models import StoredEvent
    from services.scoring import policy_store

    intake, scoring, _ = system
    assert intake.post("/v1/events", json=f.inspection(f.finding())).status_code == 201
    wait_for(lambda: score(scoring, "513431"))
    away, failures, rebuilds = set(), [], []

    def unless_away(call):
        def called(*args, **kwargs):
            if call.__name__ in away:
                failures.append(call.__name__)
                database_away()
            return call(*args, **kwargs)
        return called

    rebuild = store.rebuild
    monkeypatch.setattr(store, "rebuild", lambda *a, **k: rebuilds.append(a) or rebuild(*a, **k))
    monkeypatch.setattr(store, "persist", unless_away(store.persist))
    monkeypatch.setattr(policy_store, "active_id", unless_away(policy_store.active_id))
    away.add("active_id")  # ticks every 0.2 s (besides, a look each second, which fails quietly)
    wait_for(lambda: failures.count("active_id") >= 3)
    away.clear()
    events = [f.daily_check(county, items_failed=n) for n in (1, 2) for county in ("513431", "513433")]
    assert intake.post("/v1/events", json=events[0]).status_code == 201
    wait_for(lambda: applied_count(scoring_db) == 2, timeout=30)
    away.add("persist")
    for event in events[1:]:
        assert intake.post("/v1/events", json=event).status_code == 201
    wait_for(lambda: failures.count("persist") >= 2)
    away.clear()
    with Session(database.engine) as s:
        wanted = s.execute(select(func.count()).select_from(StoredEvent)).scalar_one()
    assert wanted == 1 + len(events)
    wait_for(lambda: applied_count(scoring_db) == wanted, timeout=30)
    assert rebuilds == []
    assert_matches_clean_recomputation(database.engine, scoring_db.engine)


def applied_count(scoring_db) -> int:
    with Session(scoring_db.engine) as s:
        return store.applied_count(s)


def test_work_done_while_polling_stops_at_its_next_check_once_a_rebalance_is_seen(scoring_db, clock):
    """`polling_while`: the polling thread saw a rebalance, so the work on the writer thread stops
    at its next check and the rebalance is raised; work that finished before a check saw it stands."""
    from services.scoring.worker import Reassigned

    worker = Worker(Settings(), scoring_db.engine, shipped(), clock=clock)
    polls, checked = [], []

    def rebalance_on_second_poll():
        polls.append(time.monotonic())
        if len(polls) == 2:
            raise Reassigned("partitions reassigned")

    def long_work(check):
        for _ in range(100):  # 10 s unless stopped
            checked.append(1)
            check()
            time.sleep(0.1)
        return "done"

    try:
        started = time.monotonic()
        with pytest.raises(Reassigned):
            worker.polling_while(long_work, rebalance_on_second_poll)
        assert time.monotonic() - started < 3 and len(polls) == 2 and 5 < len(checked) < 30

        polls.clear()
        assert worker.polling_while(lambda check: time.sleep(2.0) or "done", rebalance_on_second_poll) == "done"
        assert len(polls) == 2  # seen after the work's last check: its result stands

        def broken(check):
            raise TimeoutError("the work's own timeout, not the wait's")

        with pytest.raises(TimeoutError, match="the work's own"):
            worker.polling_while(broken, lambda: None)
    finally:
        worker.close()


@pytest.mark.parametrize(("events", "released"), [(0, False), (99_999, False), (100_000, True)])
def test_dropping_a_large_engine_gives_its_memory_back_and_a_small_one_costs_nothing(monkeypatch, events, released):
    calls = []
    monkeypatch.setattr(heap, "release", lambda: calls.append("release"))
    holder = SimpleNamespace(scorer=SimpleNamespace(applied=range(events)))
    Worker.drop_engine(holder)
    assert holder.scorer is None
    assert calls == (["release"] if released else [])


@pytest.mark.parametrize(("release_from", "released"), [(1, True), (100, False)])
def test_a_partial_workers_recomputation_gives_the_every_county_engines_memory_back_before_restoring(
        scoring_db, clock, monkeypatch, release_from, released):
    """A worker owning some partitions recomputes every county, then builds its own share: the
    every-county engine's memory goes back first when it was large (RELEASE_FROM events)."""
    from tests.scoring import factories as sf

    worker = one_county_worker(scoring_db, clock)
    worker.partition_count = 2  # partition 0 of 2: not every county is this worker's
    calls = []
    monkeypatch.setattr("services.scoring.worker.RELEASE_FROM", release_from)
    monkeypatch.setattr(heap, "release", lambda: calls.append("release"))
    restore = worker.restore
    worker.restore = lambda: calls.append("restore") or restore()
    worker.export_lines = lambda: iter([on_partition_0(sf.inspection(sf.finding("F-1")), 0).value.decode()])
    assert worker.recompute(worker.policy.id, from_intake=True) == 1
    assert calls == (["release", "restore"] if released else ["restore"])


def test_a_rolling_update_of_the_configured_policy_moves_every_worker_once_and_nobody_rescores_back(scoring_db,
                                                                                                   clock):
    """Old workers configured with default-v1 still run when new ones configured with default-v2
    start (a rolling update that changes KAOHE_SCORING_POLICY). The new worker's declaration is every
    worker's: the old one follows it (rebuilds its engine under v2) instead of rescoring back to
    v1, and the scores are rescored once. A worker started later with v1 (a rollback) moves them
    back, once."""
    import httpx

    from services.scoring import policy_store
    from services.scoring.models import WorkerClock
    from tests.scoring import factories as sf

    def intake_away():
        raise httpx.ConnectError("no intake in this test: the worker rescores its applied events")
        yield

    def worker(policy_id: str) -> Worker:
        w = Worker(Settings(scoring_policy=policy_id), scoring_db.engine, shipped(policy_id), clock=clock)
        w.export_lines = intake_away
        w.declare_policy()  # as `start` does, before the engine
        w.restore()
        w.partitions, w.partition_count = frozenset({0}), 1
        return w

    def stored() -> tuple[str, int]:
        with Session(scoring_db.engine) as s:
            c = s.get(WorkerClock, 1)
            return c.policy_id, c.generation

    clock.now = sf.T0 + timedelta(hours=1)
    with Session(scoring_db.engine) as s:
        store.save_counties(s, [{"code": "513431", "baseline_status": "in_poverty"}])
        s.commit()
    old = worker("default-v1")
    old.tick()
    old.handle([on_partition_0(sf.inspection(sf.finding("F-1", severity="major"), households=10, villages=10), 0)])
    assert score_row(scoring_db.engine).policy_id == "default-v1"
    new = worker("default-v2")
    try:
        new.tick()  # rescores under the policy it declared
        assert new.policy.id == "default-v2" and score_row(scoring_db.engine).policy_id == "default-v2"
        moved = stored()
        for _ in range(3):  # both look again, as each does about every second
            for w in (old, new):
                w.last_asked = 0.0
                w.tick()
        assert old.policy.id == new.policy.id == "default-v2"
        assert stored() == moved  # nobody rescored back (each rescoring moves the generation)
        with Session(scoring_db.engine) as s:
            listed = policy_store.listing(s, "default-v1")  # an API pod still configured with v1
        assert [p["id"] for p in listed if p["active"]] == ["default-v2"]

        rollback = worker("default-v1")
        try:
            rollback.tick()
            for w in (old, new):
                w.last_asked = 0.0
                w.tick()
            assert old.policy.id == new.policy.id == rollback.policy.id == "default-v1"
            assert stored() == ("default-v1", moved[1] + 1)  # rescored back once
        finally:
            rollback.close()
    finally:
        new.close()
        old.close()


def test_a_worker_whose_image_lacks_the_configured_policy_reads_its_rules_from_the_database(scoring_db, clock):
    """A worker of a newer image declared a policy this image does not ship: the older worker
    loads it from the declaration and follows it instead of failing or keeping its own."""
    import httpx

    from services.scoring import policy_store
    from tests.scoring import factories as sf

    newer = shipped().model_copy(update={"id": "default-v9", "version": 9,
                                         "description": "shipped by an image this one predates"})
    clock.now = sf.T0 + timedelta(hours=1)
    worker = one_county_worker(scoring_db, clock)

    def intake_away():
        raise httpx.ConnectError("no intake in this test")
        yield

    worker.export_lines = intake_away
    try:
        worker.handle([on_partition_0(sf.inspection(sf.finding("F-1", severity="major")), 0)])
        with Session(scoring_db.engine) as s:
            assert policy_store.declare_configured(s, newer, clock.now) is None  # none declared yet
            s.commit()
        worker.last_asked = 0.0
        worker.tick()
        assert worker.policy.id == "default-v9" and score_row(scoring_db.engine).policy_id == "default-v9"
        with Session(scoring_db.engine) as s:
            assert policy_store.get(s, "default-v9").description == "shipped by an image this one predates"
            assert [(p["id"], p["active"], p["configured"]) for p in policy_store.listing(s, "default-v2")
                    if p["active"] or p["configured"]] == [("default-v9", True, True)]
    finally:
        worker.close()
