"""Notify's handling of intake's records, without a broker: what it parses, what it passes by."""

from zoneinfo import ZoneInfo

import orjson
import pytest

from services.events import registry, topics
from services.notify.notifications import CRITICAL, IGNORED, INTAKE_HANDLERS, THRESHOLD, TOPIC_HANDLERS, Batch
from tests import factories as f

TZ = ZoneInfo("Asia/Shanghai")
handle = TOPIC_HANDLERS[topics.INTAKE_EVENTS]


def record(event: dict, sequence: int = 1) -> bytes:
    return registry.encode_record(sequence, f.T0, event)


def test_every_known_event_is_either_handled_or_passed_by():
    assert {registry.tag_of(t, v) for t, v in registry.MODELS} == IGNORED | {
        registry.tag_of(t, v) for t, v in registry.MODELS if t in INTAKE_HANDLERS}
    assert registry.tag_of("daily_check.recorded", 1) in IGNORED
    assert not {tag for tag in IGNORED if tag.split("@")[0] in INTAKE_HANDLERS}


def test_an_event_notify_makes_nothing_of_is_passed_by_unparsed():
    batch = Batch()
    handle(record(f.daily_check()), batch, TZ)
    # its payload is not checked here (scoring reads it and dead-letters a bad one)
    handle(record({**f.daily_check(), "payload": {"items_checked": "many"}}), batch, TZ)
    assert batch == Batch()


def test_a_handled_event_is_parsed_and_notified():
    batch = Batch()
    handle(record(f.inspection(f.finding("F-1", severity="critical"))), batch, TZ)
    assert [n.type for n in batch.notifications] == [CRITICAL]
    assert [x["finding_id"] for x in batch.findings] == ["F-1"]


@pytest.mark.parametrize("value", [
    b"{not json",
    b"[1, 2]",
    orjson.dumps({**f.daily_check(), "type": "daily_check.teleported"}),  # unknown type
    orjson.dumps({**f.daily_check(), "schema_version": 99}),  # unknown version of a passed-by type
    orjson.dumps({**f.daily_check(), "schema_version": "1"}),  # not the integer the contract has
    record({**f.inspection(f.finding()), "payload": {"findings": "none"}}),  # a handled type, bad payload
], ids=["bad-json", "not-an-object", "unknown-type", "unknown-version", "version-as-text", "bad-payload"])
def test_what_is_not_a_valid_event_is_refused_for_the_dead_letter_topic(value):
    with pytest.raises(ValueError):
        handle(value, Batch(), TZ)


def test_a_band_crossed_again_at_the_same_as_of_is_a_new_notification_and_a_resend_is_not():
    """The scoring clock (as_of) moves with ticks, not messages: good → average, back, and down
    again within one tick are three crossings (the third was taken for the first's copy)."""
    as_of = "2026-12-05T23:10:33.384956Z"
    score = lambda prev, grade, total: orjson.dumps({  # noqa: E731
        "region_code": "513427", "level": "county", "league": "in_poverty", "year": 2026, "total": total,
        "grade": grade, "previous_grade": prev, "previous_total": 100.0 if total < 90 else 88.0, "as_of": as_of})
    batch = Batch()
    for outbox_id, value in enumerate([score("good", "average", 88.0), score("average", "good", 100.0),
                                       score("good", "average", 88.0)], start=64):
        batch.outbox_id = str(outbox_id)
        TOPIC_HANDLERS[topics.SCORING_SCORES](value, batch, TZ)
    batch.outbox_id = "64"  # the relay sends the first again after a crash
    TOPIC_HANDLERS[topics.SCORING_SCORES](score("good", "average", 88.0), batch, TZ)
    ids = [n.dedupe_key for n in batch.notifications if n.type == THRESHOLD]
    assert len(ids) == 4 and len(set(ids)) == 3 and ids[0] == ids[3]


@pytest.mark.parametrize("direction, expected", [("up", "up"), ("down", "down"), (None, "down")])
def test_the_direction_of_a_crossing_is_scorings_by_the_grades_and_by_the_total_only_without_it(direction, expected):
    """A gate lifted as new findings come: the grade rises while the total falls (94 → 92). Scoring
    says which way the grade went; a message without `direction` falls back to the totals."""
    value = orjson.dumps({"region_code": "513436", "level": "county", "league": "in_poverty", "year": 2026,
                          "total": 92.0, "previous_total": 94.0, "grade": "good", "previous_grade": "average",
                          "as_of": "2026-12-05T23:10:33Z", **({"direction": direction} if direction else {})})
    batch = Batch()
    TOPIC_HANDLERS[topics.SCORING_SCORES](value, batch, TZ)
    assert [n.data["direction"] for n in batch.notifications] == [expected]
