"""Flood duplicates and inject poison messages.

Every event is sent to intake's API three times: once, again unchanged (a duplicate), and a third
time where one event in ten keeps its id with other content (a conflict, refused). Then every
stored record is published a second time straight into the intake topic (bypassing intake: the
consumers' own dedupe), and poison messages go straight into the topics: bad JSON, an unknown
type and a wrong schema version into intake's topic, bad JSON into the score and standing topics.
Nothing may count twice or get lost, and every poison message reaches a dead-letter topic.

Full form (KAOHE_CHAOS=1): 50,000 events, SQLite and PostgreSQL. Short form: 3,000, SQLite.
"""

import time

import orjson
import pytest

from services.events import topics
from services.kit.kafka import producer
from tests.chaos import report
from tests.chaos.harness import COUNTIES, FULL, Pipeline, short_form_on_sqlite
from tests.factories import stream
from tests.kafka_helpers import headers, read_messages

pytestmark = [pytest.mark.broker, pytest.mark.e2e, pytest.mark.chaos]
EVENTS = 50_000 if FULL else 3_000
BATCH = 500


def poison() -> dict[str, list[bytes]]:
    unknown = {"event_id": "00000000-0000-4000-8000-000000000001", "type": "inspection.teleported",
               "schema_version": 1, "region_code": COUNTIES[0], "payload": {}}
    wrong_version = {**unknown, "event_id": "00000000-0000-4000-8000-000000000002", "type": "inspection.recorded",
                     "schema_version": 99}
    return {topics.INTAKE_EVENTS: [b"{not json", orjson.dumps(unknown), orjson.dumps(wrong_version)],
            topics.SCORING_SCORES: [b"\xff\xfe not json", orjson.dumps({"region_code": "nope"})],
            topics.RANKING_STANDINGS: [b"[1, 2", orjson.dumps({"region_code": COUNTIES[0], "rank": "first"})]}


def test_duplicates_and_poison_count_nothing_twice_and_lose_nothing(database, tmp_path, access, own_broker):
    short_form_on_sqlite(database)
    with Pipeline(database, tmp_path, access, own_broker) as p:
        posted, conflicts = 0, 0
        for batch in stream(EVENTS, COUNTIES, batch=BATCH, seed=5):
            assert {r["status"] for r in p.post(batch)} == {"accepted"}
            assert {r["status"] for r in p.post(batch)} == {"duplicate"}
            third = [{**e, "source": "tampered"} if i % 10 == 0 else e for i, e in enumerate(batch)]
            results = p.post(third)
            assert [r["status"] for r in results] == ["rejected" if i % 10 == 0 else "duplicate"
                                                      for i in range(len(batch))]
            posted += 3 * len(batch)
            conflicts += len(batch[::10])
        # straight into the topics: every record again, and the poison
        kafka = producer(own_broker.bootstrap_servers)
        records = p.stored_events()
        for line in records.values():
            kafka.send(topics.INTAKE_EVENTS, key=orjson.loads(line)["region_code"].encode(), value=line)
        bad = poison()
        for topic, values in bad.items():
            for v in values:
                kafka.send(topic, key=COUNTIES[0].encode(), value=v)
        kafka.flush(30)
        kafka.close()
        injected = time.monotonic()
        recovery, check = p.wait_settled(injected, timeout=300 if FULL else 90)
        report.record("duplicates x3 (10% conflicting) + poison", database.backend,
                      sent=posted + len(records) + sum(map(len, bad.values())), lost=check.lost,
                      doubled=check.doubled, recovery_s=recovery,
                      note=f"{conflicts} conflicts refused; {len(records)} records republished raw; "
                           f"{sum(map(len, bad.values()))} poison")
        p.assert_consistent()
        # every poison message was dead-lettered by each service reading its topic
        readers = {topics.INTAKE_EVENTS: 2, topics.SCORING_SCORES: 2, topics.RANKING_STANDINGS: 1}
        for topic, values in bad.items():
            want = len(values) * readers[topic]
            dead = read_messages(own_broker.bootstrap_servers, topics.dead_letter(topic),
                                 lambda ms, want=want: len(ms) >= want, timeout=30)
            assert sorted(m.value for m in dead) == sorted(values * readers[topic])
            assert all(headers(m)["original_topic"] == topic for m in dead)
