"""JSON Schema per event type and the AsyncAPI 3 document, generated from the contract models."""

from functools import cache
from importlib import resources
from typing import Any

import orjson
from pydantic.json_schema import models_json_schema

from services.events import topics
from services.events.registry import MODELS, tag_of
from services.events.v1 import Envelope

HEADERS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "event_id": {"type": "string", "format": "uuid"},
        "type": {"type": "string"},
        "schema_version": {"type": "string", "pattern": r"^\d+$"},
        "sequence": {"type": "string", "pattern": r"^\d+$"},
        "request_id": {"type": "string", "maxLength": 128,
                       "description": "The id of the HTTP request that sent the event (its X-Request-ID, or one intake "
                       "made up), to follow it through every service's logs (docs/observability.md)."},
        "outbox_id": {"type": "string", "pattern": r"^\d+$",
                      "description": "The event's sequence (intake's outbox is its event store): the same on "
                      "a resend."},
    },
    "required": ["event_id", "type", "schema_version", "sequence"],
}
RECORD_ADDITIONS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "recorded_at": {"type": "string", "format": "date-time", "description": "When intake accepted it."},
        "sequence": {"type": "integer", "minimum": 1, "description": "Position in intake's event store."},
    },
    "required": ["recorded_at", "sequence"],
}


def message_name(model: type[Envelope]) -> str:
    """`InspectionRecordedV1`: a stable component name per (type, version)."""
    return f"{model.__name__}V{model.model_fields['schema_version'].default}"


@cache
def json_schema(type_: str, schema_version: int) -> dict[str, Any]:
    """A standalone JSON Schema (2020-12) for one event type and version."""
    model = MODELS[(type_, schema_version)]
    schema = model.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:kaohe:event:{tag_of(type_, schema_version)}",
        **schema,
    }


def sample(type_: str, schema_version: int) -> dict[str, Any]:
    """The sample event shipped beside the contracts: a new dict each call (callers change theirs)."""
    return orjson.loads(_sample_bytes(type_, schema_version))


@cache
def _sample_bytes(type_: str, schema_version: int) -> bytes:
    return resources.files("services.events").joinpath(f"samples/{type_}.v{schema_version}.json").read_bytes()


def _record_schema(schemas: dict[str, Any], name: str) -> str:
    """Add `<Name>Record`: the envelope's schema plus what intake adds (it forbids other fields)."""
    envelope = schemas[name]
    record = {**envelope, "title": f"{envelope.get('title', name)} (as published)",
              "properties": {**envelope["properties"], **RECORD_ADDITIONS["properties"]},
              "required": [*envelope.get("required", []), *RECORD_ADDITIONS["required"]]}
    schemas[f"{name}Record"] = record
    return f"{name}Record"


@cache
def asyncapi(partitions: int = 6) -> dict[str, Any]:
    """AsyncAPI 3.0 description of the topics intake publishes."""
    models = list(MODELS.values())
    _, defs = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    messages: dict[str, Any] = {}
    channel_messages: dict[str, Any] = {}
    for (type_, version), model in MODELS.items():
        name = message_name(model)
        messages[name] = {
            "name": type_,
            "title": f"{type_} v{version}",
            "summary": (model.__doc__ or "").strip().splitlines()[0],
            "contentType": "application/json",
            "headers": HEADERS_SCHEMA,
            "payload": {"$ref": f"#/components/schemas/{_record_schema(schemas, model.__name__)}"},
            "bindings": {"kafka": {"key": {"type": "string", "pattern": r"^\d{6}$",
                                           "description": "The county's region code."}}},
            "examples": [{"name": "sample", "payload": {**sample(type_, version),
                                                          "recorded_at": "2026-03-02T01:31:00+00:00",
                                                          "sequence": 1}}],
        }
        channel_messages[name] = {"$ref": f"#/components/messages/{name}"}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Kaohe intake events",
            "version": "1.0.0",
            "description": "Every event intake accepted, in store order per county. Consumers dedupe on "
            "event_id and may see a message more than once (at-least-once delivery).",
        },
        "defaultContentType": "application/json",
        "servers": {"local": {"host": "localhost:9092", "protocol": "kafka",
                              "description": "The local broker `make run` starts."}},
        "channels": {
            "intakeEvents": {
                "address": topics.INTAKE_EVENTS,
                "description": "Keyed by county region code, so one county's events stay in order.",
                "messages": channel_messages,
                "bindings": {"kafka": {"topic": topics.INTAKE_EVENTS, "partitions": partitions}},
            },
            "intakeEventsDeadLetter": {
                "address": topics.dead_letter(topics.INTAKE_EVENTS),
                "description": "Messages a consumer could not process, with headers naming the error "
                "and the original topic, partition and offset.",
            },
        },
        "operations": {
            "publishIntakeEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/intakeEvents"},
                "messages": [{"$ref": f"#/channels/intakeEvents/messages/{n}"} for n in channel_messages],
            }
        },
        "components": {"messages": messages, "schemas": schemas},
    }
