"""Opaque keyset cursors: base64 of a small JSON object; a bad cursor is a 422 naming `cursor`."""

import base64
import binascii
from typing import Any

import orjson

from services.kit.problems import field_problem
from services.kit.types import INT64_MAX


def encode(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def _fits(value: Any, kind: type) -> bool:
    if kind is int:  # bool is an int to Python, not to a database; and no column holds more than 64 bits
        return isinstance(value, int) and not isinstance(value, bool) and -INT64_MAX <= value <= INT64_MAX
    return isinstance(value, str) and len(value) <= 256 and "\x00" not in value


def decode(cursor: str | None, fields: dict[str, type]) -> dict[str, Any] | None:
    """The position in `cursor`, each of `fields` of its type (int or str), else a 422: a cursor
    is read back into a query, and one a client made up must not reach the database."""
    if cursor is None:
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        data = None
    if not isinstance(data, dict) or any(k not in data or not _fits(data[k], kind) for k, kind in fields.items()):
        raise field_problem("cursor", "not a cursor this API returned")
    return data
