"""One discriminated union over every (type, schema_version): the only way events are parsed."""

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Union

import orjson
from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from services.events import v1
from services.events.v1 import Accepting, Envelope

MODELS: dict[tuple[str, int], type[Envelope]] = {
    (m.model_fields["type"].default, m.model_fields["schema_version"].default): m for m in v1.MODELS
}
TYPES: tuple[str, ...] = tuple(sorted({t for t, _ in MODELS}))


def tag_of(type_: str, schema_version: int) -> str:
    return f"{type_}@v{schema_version}"


def _discriminate(value: Any) -> str | None:
    if isinstance(value, dict):
        type_, version = value.get("type"), value.get("schema_version", 1)
    else:
        type_, version = getattr(value, "type", None), getattr(value, "schema_version", 1)
    if not isinstance(type_, str):
        return None
    return tag_of(type_, version if isinstance(version, int) else -1)


Event = Annotated[
    Union[tuple(Annotated[m, Tag(tag_of(t, v))] for (t, v), m in MODELS.items())],  # type: ignore[misc]
    Discriminator(
        _discriminate,
        custom_error_type="unknown_event_type",
        custom_error_message="unknown event type or schema_version",
    ),
]
EVENT_ADAPTER: TypeAdapter[Envelope] = TypeAdapter(Event)


def parse(data: Any, accepting: Accepting | None = None) -> Envelope:
    """Parse one event (a dict); raises pydantic.ValidationError. `accepting`: a new event at
    intake, judged also by the rules only new events meet (services/events/v1.py)."""
    return EVENT_ADAPTER.validate_python(data, context=accepting.context() if accepting else None)


def known_versions(type_: str) -> list[int]:
    return sorted(v for t, v in MODELS if t == type_)


_TAGS = {tag_of(t, v) for t, v in MODELS}


def field_errors(exc: ValidationError, data: Any, prefix: tuple[str | int, ...] = ()) -> list[dict[str, Any]]:
    """Every offending field of a failed parse, named by its path in the event (union tags removed)."""
    out: list[dict[str, Any]] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if p not in _TAGS)
        message = err["msg"]
        if err["type"] == "unknown_event_type":
            loc, message = explain_unknown(data)
        out.append(_field_error(prefix + loc, message, err["type"]))
    return out


def explain_unknown(data: Any) -> tuple[tuple[str, ...], str]:
    if not isinstance(data, dict):
        return (), "an event must be a JSON object"
    type_ = data.get("type")
    if type_ is None:
        return ("type",), "Field required"
    versions = known_versions(type_) if isinstance(type_, str) else []
    if not versions:
        return ("type",), f"unknown event type {type_!r}; known: {', '.join(TYPES)}"
    return ("schema_version",), (
        f"unknown schema_version {data.get('schema_version')!r} for {type_!r}; known: {versions}"
    )


def _field_error(loc: tuple[str | int, ...], message: str, type_: str) -> dict[str, Any]:
    return {
        "field": ".".join(str(p) for p in loc) or "(body)",
        "pointer": "".join(f"/{p}" for p in loc),
        "message": message,
        "type": type_,
    }


# ---- the stored/published record -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Recorded:
    """An event as intake stored and published it."""

    sequence: int
    recorded_at: datetime
    event: Envelope


def to_json_dict(event: Envelope) -> dict[str, Any]:
    return event.model_dump(mode="json")


def iso_utc(moment: datetime) -> str:
    """RFC 3339 in UTC with fixed microseconds ("…T01:31:00.000000Z"): sorts as it reads."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def record_dict(sequence: int, recorded_at: datetime | str, event_json: dict[str, Any]) -> dict[str, Any]:
    """`recorded_at`: the moment, or it already formatted by `iso_utc` (an append's events share one)."""
    at = recorded_at if isinstance(recorded_at, str) else iso_utc(recorded_at)
    return {**event_json, "recorded_at": at, "sequence": sequence}


def encode_record(sequence: int, recorded_at: datetime | str, event_json: dict[str, Any]) -> bytes:
    """The Kafka message value and the export line (identical bytes): envelope + intake's additions."""
    return orjson.dumps(record_dict(sequence, recorded_at, event_json), option=orjson.OPT_SORT_KEYS)


def decode_record(raw: bytes | str | dict[str, Any]) -> Recorded:
    """Parse a published record; raises ValueError (bad JSON) or ValidationError."""
    data = orjson.loads(raw) if isinstance(raw, (bytes, str)) else dict(raw)
    if not isinstance(data, dict):
        raise ValueError("record is not a JSON object")
    try:
        sequence = int(data.pop("sequence"))
        recorded_at = datetime.fromisoformat(data.pop("recorded_at"))
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"record lacks a valid sequence/recorded_at: {exc}") from exc
    return Recorded(sequence=sequence, recorded_at=recorded_at, event=parse(data))


def canonical_content(event_json: dict[str, Any]) -> bytes:
    """Bytes that identify an event's content: key order and UTC offset do not matter."""
    content = dict(event_json)
    occurred = datetime.fromisoformat(content["occurred_at"]).astimezone(timezone.utc)
    content["occurred_at"] = occurred.isoformat()
    return orjson.dumps(content, option=orjson.OPT_SORT_KEYS)


__all__ = [
    "Accepting",
    "EVENT_ADAPTER",
    "Event",
    "MODELS",
    "Recorded",
    "TYPES",
    "ValidationError",
    "canonical_content",
    "decode_record",
    "encode_record",
    "iso_utc",
    "record_dict",
    "known_versions",
    "parse",
    "tag_of",
]
