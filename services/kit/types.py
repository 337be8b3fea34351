"""Field types shared by every service's API."""

import re
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import AfterValidator, AwareDatetime, BeforeValidator

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
INT64_MAX = 2**63 - 1  # the largest id or position any database column holds; beyond it, a 422 not a 500


def _iso_only(value: Any) -> Any:
    """Pydantic also reads numbers as Unix times; the API documents ISO 8601 date-times only."""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO.match(value)):
        return value
    raise ValueError("an ISO 8601 date-time with a UTC offset, e.g. 2026-03-02T09:30:00+08:00")


def _in_utc_range(value: datetime) -> datetime:
    """Every time is stored and compared in UTC: 9999-12-31T23:59-14:00 or 0001-01-01T00:00+14:00
    have no UTC time (they overflowed into a 500)."""
    try:
        value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("out of range: the time in UTC must lie within the years 1 to 9999") from None
    return value


UtcDateTime = Annotated[AwareDatetime, AfterValidator(_in_utc_range)]
IsoDateTime = Annotated[UtcDateTime, BeforeValidator(_iso_only)]
