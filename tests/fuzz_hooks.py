"""Schemathesis hooks for tests/test_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

One check of ours next to the built-in ones: whatever a key of prefecture A reads, the key of
prefecture B (KAOHE_FUZZ_OTHER_KEY) must not get — a 403/404, or a body naming none of A's regions.
It covers lists and filtered reads, which the built-in object_level_authorization (objects by id)
does not.
"""

import os

import orjson
import schemathesis
from schemathesis.core.failures import Failure

A_PREFIX = os.environ.get("KAOHE_FUZZ_A_PREFIX", "5134")
REFERENCE = ("/asyncapi.json", "/v1/schemas")  # documents the same for every key (their samples name a county)


def names_a(value) -> bool:
    """True if a JSON value names a region of prefecture A anywhere (a whole 6-digit string)."""
    if isinstance(value, dict):
        return any(names_a(v) for v in value.values())
    if isinstance(value, list):
        return any(names_a(v) for v in value)
    return isinstance(value, str) and len(value) == 6 and value.isdigit() and value.startswith(A_PREFIX)


def parsed(text: str):
    """JSON or NDJSON (the export), else None."""
    try:
        return [orjson.loads(line) for line in text.splitlines() if line.strip()]
    except orjson.JSONDecodeError:
        return None


@schemathesis.check
def other_region_sees_nothing(ctx, response, case):
    other_key = os.environ.get("KAOHE_FUZZ_OTHER_KEY")
    if case.path.startswith(REFERENCE):
        return None
    if not other_key or case.method != "GET" or response.status_code != 200 or not names_a(parsed(response.text)):
        return None
    other = case.call(headers={"Authorization": f"Bearer {other_key}"})
    if other.status_code == 200 and names_a(parsed(other.text)):
        raise Failure(operation=case.operation.label, title="Another prefecture's key got prefecture A's data",
                          message=f"{case.method} {case.formatted_path} as prefecture B → 200: {other.text[:300]}")
    return None
