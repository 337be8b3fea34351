"""Field types shared by every service's API."""

import re
from datetime import datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BeforeValidator

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def _iso_only(value: Any) -> Any:
    """Pydantic also reads numbers as Unix times; the API documents ISO 8601 date-times only."""
    if isinstance(value, datetime) or (isinstance(value, str) and _ISO.match(value)):
        return value
    raise ValueError("an ISO 8601 date-time with a UTC offset, e.g. 2026-03-02T09:30:00+08:00")


IsoDateTime = Annotated[AwareDatetime, BeforeValidator(_iso_only)]
