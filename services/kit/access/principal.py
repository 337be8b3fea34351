"""Who is calling: an API key's scopes and the region it may see. Pure: no I/O."""

import re
from dataclasses import dataclass
from datetime import datetime

from services.events.v1 import REGION_CODE
from services.kit.problems import Problem

SCOPES = ("events:write", "events:read", "scores:read", "standings:read", "webhooks:manage", "admin")
NATIONAL = "000000"  # a key's region for every province (a regions file of several: KAOHE_REGIONS_FILE)


def region_prefix(code: str) -> str:
    """What every code inside `code` starts with: a province ends in 0000, a prefecture in 00,
    and every code is inside the national scope."""
    if code == NATIONAL:
        return ""
    if code.endswith("0000"):
        return code[:2]
    if code.endswith("00"):
        return code[:4]
    return code


def key_region(value: str) -> bool:
    """What a key's region may be: a division code, or the national scope."""
    return value == NATIONAL or re.fullmatch(REGION_CODE, value) is not None


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    name: str
    scopes: frozenset[str]
    region: str
    rate_limit_per_min: int | None = None
    expires_at: datetime | None = None

    @property
    def region_prefix(self) -> str:
        """For prefix filters in SQL: `code LIKE prefix || '%'`."""
        return region_prefix(self.region)

    @property
    def province_wide(self) -> bool:
        """A whole province, or every province (the national scope)."""
        return self.region.endswith("0000")

    def covers(self, code: str | None) -> bool:
        """True if the region `code` lies inside this key's region (or is it)."""
        return bool(code) and len(code) == 6 and code.startswith(self.region_prefix)

    def sees(self, code: str | None) -> bool:
        """Inside the key's region, or one of its ancestors (a prefecture key sees its province's name)."""
        if self.covers(code):
            return True
        return bool(code) and code in (self.region[:2] + "0000", self.region[:4] + "00")

    def holds_all(self, provinces: set[str]) -> bool:
        """True if the key's region holds every one of `provinces` (two-digit prefixes): the
        national scope always, a province key when it is the only province (or none is known)."""
        return self.region == NATIONAL or (self.province_wide and provinces <= {self.region[:2]})

    def has(self, *scopes: str) -> bool:
        """`admin` holds every scope."""
        return "admin" in self.scopes or all(s in self.scopes for s in scopes)

    def check_region(self, code: str | None, what: str = "region") -> None:
        """404, as if `code` did not exist, when it lies outside the key's region."""
        if not self.covers(code):
            raise not_found(what, code)


def not_found(what: str, ident: object) -> Problem:
    return Problem(404, "not-found", "Not found", f"no {what} {ident}")
