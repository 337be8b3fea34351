"""Field types shared by every service's API."""

from datetime import datetime, timezone
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime

from services.events.v1 import MOMENT_TEXT

INT64_MAX = 2**63 - 1  # the largest id or position any database column holds; beyond it, a 422 not a 500


def _in_utc_range(value: datetime) -> datetime:
    """Every time is stored and compared in UTC: 9999-12-31T23:59-14:00 or 0001-01-01T00:00+14:00
    have no UTC time (they overflowed into a 500)."""
    try:
        value.astimezone(timezone.utc)
    except OverflowError:
        raise ValueError("out of range: the time in UTC must lie within the years 1 to 9999") from None
    return value


UtcDateTime = Annotated[AwareDatetime, AfterValidator(_in_utc_range)]
IsoDateTime = Annotated[UtcDateTime, MOMENT_TEXT]  # ISO 8601 text only, as in the event contracts (no Unix times)
