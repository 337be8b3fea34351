"""Opaque keyset cursors: base64 of a small JSON object; a bad cursor is a 422 naming `cursor`."""

import base64
import binascii
from typing import Any

import orjson

from services.kit.problems import field_problem


def encode(position: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode().rstrip("=")


def decode(cursor: str | None, required: tuple[str, ...]) -> dict[str, Any] | None:
    if cursor is None:
        return None
    try:
        data = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        data = None
    if not isinstance(data, dict) or any(k not in data for k in required):
        raise field_problem("cursor", "not a cursor this API returned")
    return data
