"""The event contracts: samples, JSON Schemas, AsyncAPI, and the union parser."""

import jsonschema
import pytest

from services.events import registry, schemas, topics
from services.events.vocabulary import FindingCategory, Indicator

ALL = sorted(registry.MODELS)
BRIEF_TYPES = {
    "inspection.recorded", "rectification.reported", "rectification.verified", "rectification.rejected",
    "finding.disputed", "finding.upheld", "finding.withdrawn", "daily_check.recorded",
    "year_end_assessment.recorded", "county.status_changed", "return_risk.flagged", "return_risk.cleared",
    "inspector.absence_recorded",
}


def test_every_event_type_of_the_issue_exists():
    assert set(registry.TYPES) == BRIEF_TYPES


@pytest.mark.parametrize("type_, version", ALL)
def test_sample_parses_and_matches_its_json_schema(type_, version):
    sample = schemas.sample(type_, version)
    event = registry.parse(sample)
    assert (event.type, event.schema_version) == (type_, version)
    jsonschema.Draft202012Validator.check_schema(schemas.json_schema(type_, version))
    jsonschema.validate(sample, schemas.json_schema(type_, version), cls=jsonschema.Draft202012Validator)
    # dumping and parsing again gives the same event
    assert registry.parse(registry.to_json_dict(event)) == event


@pytest.mark.parametrize("type_, version", ALL)
def test_json_schema_rejects_what_the_model_rejects(type_, version):
    bad = {**schemas.sample(type_, version), "unexpected": 1}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schemas.json_schema(type_, version), cls=jsonschema.Draft202012Validator)
    with pytest.raises(registry.ValidationError):
        registry.parse(bad)


def test_enumerations_follow_the_brief():
    assert len(FindingCategory) == 6
    assert {"food", "clothing", "education", "medical", "housing", "poverty_incidence", "registry_accuracy"} <= {
        i.value for i in Indicator}


def test_asyncapi_document_describes_every_message():
    doc = schemas.asyncapi(6)
    assert doc["asyncapi"].startswith("3.")
    channel = doc["channels"]["intakeEvents"]
    assert channel["address"] == topics.INTAKE_EVENTS
    assert doc["channels"]["intakeEventsDeadLetter"]["address"] == "kaohe.intake.events.v1.dlt"
    assert len(channel["messages"]) == len(ALL)
    for name, message in doc["components"]["messages"].items():
        ref = message["payload"]["$ref"]
        assert ref.split("/")[-1] in doc["components"]["schemas"], name
        assert set(message["headers"]["required"]) == {"event_id", "type", "schema_version", "sequence"}
    # every $ref points inside the document
    def refs(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "$ref":
                    yield v
                else:
                    yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)
    for ref in refs(doc):
        node = doc
        for part in ref.lstrip("#/").split("/"):
            node = node[part]


def test_asyncapi_examples_validate_against_their_payload_schema():
    doc = schemas.asyncapi(6)
    for message in doc["components"]["messages"].values():
        schema = {**message["payload"], "components": doc["components"]}
        for example in message["examples"]:
            jsonschema.validate(example["payload"], schema, cls=jsonschema.Draft202012Validator)


def test_record_round_trip():
    from datetime import datetime, timezone

    sample = schemas.sample("inspection.recorded", 1)
    raw = registry.encode_record(42, datetime(2026, 3, 2, tzinfo=timezone.utc), sample)
    rec = registry.decode_record(raw)
    assert rec.sequence == 42 and rec.event == registry.parse(sample)
    with pytest.raises(ValueError):
        registry.decode_record(b"{}")
    with pytest.raises(ValueError):
        registry.decode_record(b"not json")


def test_canonical_content_ignores_key_order_and_offset():
    a = schemas.sample("finding.upheld", 1)
    b = dict(reversed(list(a.items())))
    b["occurred_at"] = "2026-03-10T01:00:00+00:00"  # 09:00 in Beijing
    assert registry.canonical_content(a) == registry.canonical_content(b)
    assert registry.canonical_content(a) != registry.canonical_content({**a, "source": "x"})


def _accepting():
    from datetime import datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    return registry.Accepting(now=datetime(2027, 1, 1, tzinfo=timezone.utc), max_future=timedelta(days=1),
                              zone=ZoneInfo("Asia/Shanghai"))


@pytest.mark.parametrize("type_, version", ALL)
def test_every_sample_is_accepted_as_a_new_event(type_, version):
    sample = schemas.sample(type_, version)
    assert registry.parse(sample, _accepting()) == registry.parse(sample)


@pytest.mark.parametrize("change", [
    lambda p: p["findings"][0].update(deadline="9999-12-31"),
    lambda p: p.update(households_sampled=5),
    lambda p: p.update(villages_sampled=0, households_sampled=0),
])
def test_rules_for_new_events_do_not_turn_a_stored_record_into_a_dead_letter(change):
    """Deadline bounds and sampling are judged when intake accepts an event, not when a record is
    read again (a record stored before they were made stricter still replays)."""
    sample = schemas.sample("inspection.recorded", 1)
    change(sample["payload"])
    with pytest.raises(registry.ValidationError):
        registry.parse(sample, _accepting())
    from datetime import datetime, timezone

    raw = registry.encode_record(7, datetime(2026, 3, 2, tzinfo=timezone.utc), sample)
    assert registry.decode_record(raw).event.payload == registry.parse(sample).payload


def test_booleans_are_no_numbers_even_in_stored_records():
    sample = schemas.sample("inspection.recorded", 1)
    sample["payload"]["villages_sampled"] = True
    with pytest.raises(registry.ValidationError):
        registry.parse(sample)


@pytest.mark.parametrize("field, value, where", [
    ("occurred_at", 1764547200, "occurred_at"),  # a Unix time: pydantic alone reads it as 2025-12-01
    ("occurred_at", "1764547200", "occurred_at"),
    ("deadline", 1767225600, "payload.findings.0.deadline"),
    ("deadline", "20261231", "payload.findings.0.deadline"),
])
def test_times_and_days_are_iso_text_not_numbers(field, value, where):
    sample = schemas.sample("inspection.recorded", 1)
    (sample["payload"]["findings"][0] if field == "deadline" else sample)[field] = value
    with pytest.raises(registry.ValidationError) as caught:
        registry.parse(sample)
    assert [e["field"] for e in registry.field_errors(caught.value, sample)] == [where]
    assert "ISO 8601" in registry.field_errors(caught.value, sample)[0]["message"]


@pytest.mark.parametrize("occurred_at", ["2026-03-02T01:00:00+08:00", "2026-03-01T17:00:00Z"])
def test_a_deadline_before_the_visit_day_in_the_province_is_refused_whatever_the_offset(occurred_at):
    """One instant, two offsets: the visit is on 2026-03-02 in Beijing, so a deadline of 03-01 is
    before it either way (by the offset's own date, the UTC form slipped through)."""
    sample = schemas.sample("inspection.recorded", 1)
    sample["occurred_at"] = occurred_at
    sample["payload"]["findings"][0]["deadline"] = "2026-03-01"
    with pytest.raises(registry.ValidationError) as caught:
        registry.parse(sample, _accepting())
    errors = registry.field_errors(caught.value, sample)
    assert [e["field"] for e in errors] == ["payload.findings.0.deadline"]
    assert "inspection day 2026-03-02" in errors[0]["message"]
    sample["payload"]["findings"][0]["deadline"] = "2026-03-02"
    assert registry.parse(sample, _accepting()).payload.findings[0].deadline.isoformat() == "2026-03-02"
