"""The worker reads records through services/scoring/engine/view.py, not the full contract: the
view must cover every event the registry knows, score every record exactly as the full contract's
parse would, and refuse (for the dead-letter topic) what the engine cannot read."""

import uuid

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.events import registry
from services.scoring.engine import view
from services.scoring.engine.engine import Engine
from tests.scoring.factories import T0, finding, inspection, step
from tests.scoring.test_engine_properties import EACH_POLICY, PROPERTY, STATUSES, everything, histories


def stored(r: registry.Recorded) -> bytes:
    """A record as intake publishes it (the Kafka value, the export line)."""
    return registry.encode_record(r.sequence, r.recorded_at, registry.to_json_dict(r.event))


def test_the_view_covers_every_type_and_version_the_registry_knows():
    assert view.covered() == set(registry.MODELS)


@EACH_POLICY
@PROPERTY
@given(history=histories())
def test_scores_read_through_the_view_equal_those_read_through_the_full_contract(policy, history):
    records, ticks, end = history
    engines = {}
    for name, decode in (("contract", registry.decode_record), ("view", view.decode)):
        engine = engines[name] = Engine(policy, STATUSES, start=T0)
        tick_at = dict(ticks)
        for i, r in enumerate(records):
            if i in tick_at:
                engine.advance(tick_at[i])
            read = decode(stored(r))
            assert (read.sequence, read.recorded_at, read.event.event_id) == (r.sequence, r.recorded_at,
                                                                             r.event.event_id)
            engine.apply(read)
        engine.advance(end)
    assert everything(engines["view"]) == everything(engines["contract"])
    assert engines["view"].findings == engines["contract"].findings


def good() -> dict:
    return orjson.loads(stored(inspection(finding("F-1"))))


def broken(change) -> bytes:
    data = good()
    change(data)
    return orjson.dumps(data)


@pytest.mark.parametrize("raw", [
    b"not json",
    b"[1, 2]",
    b"",
    broken(lambda d: d.update(type="inspection.deleted")),  # unknown type
    broken(lambda d: d.update(schema_version=2)),  # unknown version
    broken(lambda d: d.pop("sequence")),
    broken(lambda d: d.pop("event_id")),
    broken(lambda d: d.update(event_id="not-a-uuid")),
    broken(lambda d: d.update(region_code="51343")),
    broken(lambda d: d.update(region_code="5134001")),
    broken(lambda d: d.update(region_code="013400")),
    broken(lambda d: d.update(region_code="51340a")),
    broken(lambda d: d.update(region_code="51340\u0661")),  # an Arabic-Indic digit: the contract takes [0-9] only
    broken(lambda d: d.update(region_code=513400)),
    broken(lambda d: d.update(occurred_at="2026-03-02T01:00:00")),  # no UTC offset
    broken(lambda d: d.update(occurred_at="1999-03-02T01:00:00Z")),  # before 2010
    broken(lambda d: d.update(occurred_at="2100-01-01T00:00:00Z")),  # from 2100 on
    broken(lambda d: d["payload"].pop("team_id")),
    broken(lambda d: d["payload"].update(households_sampled=-1)),
    broken(lambda d: d["payload"].pop("villages_sampled")),  # the policy's households_per_village needs it
    broken(lambda d: d["payload"].update(villages_sampled=-1)),
    broken(lambda d: d["payload"].update(villages_sampled=True)),
    broken(lambda d: d["payload"]["findings"][0].update(severity="catastrophic")),
    broken(lambda d: d["payload"]["findings"][0].update(deadline="soon")),
    broken(lambda d: d["payload"].update(households_sampled=True)),  # strict, as in the contract
    broken(lambda d: d["payload"].update(households_sampled=100.0)),
    broken(lambda d: d["payload"].update(households_sampled="100")),
], ids=["not-json", "array", "empty", "unknown-type", "unknown-version", "no-sequence", "no-event-id",
        "event-id-not-uuid", "region-5-digits", "region-7-digits", "region-leading-0", "region-letter",
        "region-other-digit", "region-number", "no-utc-offset", "before-2010", "from-2100", "no-team",
        "negative-households", "no-villages", "negative-villages", "villages-bool",
        "unknown-severity", "deadline-not-a-day", "households-bool", "households-float", "households-string"])
def test_what_the_engine_cannot_read_is_refused(raw):
    with pytest.raises(ValueError):
        view.decode(raw)


@pytest.mark.parametrize("raw", [
    orjson.dumps({**orjson.loads(stored(step("rectification.verified", "F-1"))), "type": "daily_check.recorded",
                  "payload": {"check_id": "C", "kind": "work_log", "items_checked": 5, "items_failed": value}})
    for value in (True, 1.0, "1")] + [
    orjson.dumps({**orjson.loads(stored(step("rectification.verified", "F-1"))), "type": "year_end_assessment.recorded",
                  "payload": {"year": 2026, "score": True}}),
    orjson.dumps({**orjson.loads(stored(step("rectification.verified", "F-1"))), "type": "inspector.absence_recorded",
                  "payload": {"team_id": "t", "inspector_id": "i", "approved": 1}}),
])
def test_the_view_and_the_contract_both_refuse_a_boolean_for_a_number_and_a_number_for_a_flag(raw):
    with pytest.raises(ValueError):
        view.decode(raw)
    with pytest.raises(ValueError):
        registry.decode_record(raw)


def test_fields_the_engine_does_not_use_are_ignored():
    data = orjson.loads(stored(step("rectification.verified", "F-1")))
    data["payload"]["note"] = "x" * 10_000  # longer than the contract allows: not the view's concern
    record = view.decode(orjson.dumps(data))
    assert record.event.payload.finding_id == "F-1"


def test_the_view_caches_no_values_across_records():
    """Values are not shared across records through a string cache (pydantic's view cached keys
    only; msgspec's caches none): a cached value made during a recomputation outlives it and pins
    its allocator arena, so the every-county engine's memory could not go back before the worker's
    own engine was built (docs/performance.md, peak memory)."""
    a, b = (view.decode(stored(r)) for r in (inspection(finding("F-1")), inspection(finding("F-2"))))
    assert a.event.region_code == b.event.region_code
    assert a.event.region_code is not b.event.region_code


@given(st.uuids(version=None) | st.sampled_from([uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]))
def test_an_event_ids_text_is_the_uuids_own(uid):
    """`view.id_text` (msgspec's, in C) makes what `str(uid)` makes: the causes and applied ids the
    worker stores must not differ from the text a recomputation or an export line gives."""
    assert view.id_text(uid) == str(uid)
