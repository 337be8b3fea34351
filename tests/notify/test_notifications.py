"""Notify's handling of intake's records, without a broker: what it parses, what it passes by."""

from zoneinfo import ZoneInfo

import orjson
import pytest

from services.events import registry, topics
from services.notify.notifications import CRITICAL, IGNORED, INTAKE_HANDLERS, TOPIC_HANDLERS, Batch
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
