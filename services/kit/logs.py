"""Logging set-up for every entry point, and the ids a log line carries.

One JSON object per line by default (`KAOHE_LOG_FORMAT=text` for the human format). A request id
and an event id live in context variables: set by the HTTP middleware (`X-Request-ID`), by
`bound(...)`, and from a consumed message's headers (`message_context`); every log line and every
outbox row written meanwhile carries them, so one request can be followed across Kafka hops.
"""

import logging
import os
import re
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextvars import ContextVar, Token
from datetime import datetime, timezone
from typing import Any

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("kaohe_request_id", default=None)
EVENT_ID: ContextVar[str | None] = ContextVar("kaohe_event_id", default=None)
_VARS = {"request_id": REQUEST_ID, "event_id": EVENT_ID}

# printable ASCII without spaces, at most 128: what a proxy or a partner may send as X-Request-ID
_VALID_ID = re.compile(r"[\x21-\x7e]{1,128}")
# LogRecord attributes of the logging module itself; anything else came as `extra=` and is a field
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def valid_id(value: str | None) -> str | None:
    """`value` if it is a usable id (short, printable), else None."""
    return value if value and _VALID_ID.fullmatch(value) else None


def new_request_id() -> str:
    return uuid.uuid4().hex


def current_ids() -> dict[str, str]:
    """The request and event ids of this context (only those set)."""
    return {name: value for name, var in _VARS.items() if (value := var.get()) is not None}


class bound:
    """`with bound(request_id=…, event_id=…):` within the block, these ids are the current ones;
    None clears one. A class, not a generator: intake enters one for every event it appends."""

    __slots__ = ("_ids", "_tokens")

    def __init__(self, **ids: str | None) -> None:
        self._ids = ids

    def __enter__(self) -> None:
        self._tokens = [(_VARS[name], _VARS[name].set(value)) for name, value in self._ids.items()]

    def __exit__(self, *_exc: object) -> None:
        for var, token in reversed(self._tokens):
            var.reset(token)


class message_context(bound):
    """The ids a consumed message carries (its `request_id` and `event_id` headers) become the
    current ones; those it lacks are cleared, so nothing leaks from the previous message.

    `message_context(m)` alone sets them until the next call; `with message_context(m):` restores
    the previous ones after the block (`bound`'s exit).
    """

    __slots__ = ()

    def __init__(self, message: Any) -> None:  # (set here, not on entering: without a block too)
        headers = _headers(message)
        self._tokens: list[tuple[ContextVar, Token]] = [
            (var, var.set(valid_id(headers.get(name)))) for name, var in _VARS.items()]

    def __enter__(self) -> "message_context":  # type: ignore[override]
        return self


def message_ids(message: Any) -> dict[str, str]:
    """The valid ids (request_id, event_id) a consumed message carries in its headers, without
    making them the current ones (cheaper than a context, for a loop that only passes them on)."""
    return {name: value for name, raw in _headers(message).items() if (value := valid_id(raw)) is not None}


def in_message_context(messages: Iterable[Any]) -> Iterator[Any]:
    """`for m in in_message_context(messages):` — each message's ids are the current ones while the
    loop body handles it; after the loop, the ids from before it are back."""
    for message in messages:
        with message_context(message):
            yield message


def _headers(message: Any) -> dict[str, str]:
    out = {}
    for key, value in getattr(message, "headers", None) or ():
        if key in _VARS and value is not None:
            out[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return out


class _Ids(logging.Filter):
    """Copies the context's ids onto the record on the thread that logs (formatting may not be)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in _VARS.items():
            if not hasattr(record, name):
                setattr(record, name, var.get())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, service, the ids,
    any `extra=` fields, and the exception's traceback as `exc`."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, timezone.utc)
        line: dict[str, Any] = {
            "time": at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "service": self.service,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and value is not None and key not in line:
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def process_name() -> str:
    """What this process is, from the module run with `python -m`: `scoring-worker`, `intake`, ..."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    parts = [p for p in (spec.name if spec else "").split(".") if p not in ("services", "__main__", "kit")]
    return "-".join(parts) or "kaohe"


def configure(service: str | None = None) -> None:
    """Root logging for an entry point: JSON lines on stderr (or text), level from KAOHE_LOG_LEVEL."""
    handler = logging.StreamHandler()
    handler.addFilter(_Ids())
    if os.environ.get("KAOHE_LOG_FORMAT", "json").lower() == "text":
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    else:
        handler.setFormatter(JsonFormatter(service or process_name()))
    logging.basicConfig(level=os.environ.get("KAOHE_LOG_LEVEL", "INFO"), handlers=[handler])
    for noisy in ("kafka", "httpx", "alembic.runtime.migration"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
