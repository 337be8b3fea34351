"""Pure ranking rules (no SQL, Kafka or HTTP): scopes a score belongs to, competition ranks.

A county is ranked within its prefecture and within its province, in its league (`in_poverty`
or `exited`); a prefecture within its province (league `all`). Ties share a rank and the next
rank skips (1, 2, 2, 4); display order within a tie is by region code.
"""

from collections.abc import Iterable
from dataclasses import dataclass

LEAGUES = ("in_poverty", "exited")
ALL = "all"


def prefecture_of(code: str) -> str:
    return code[:4] + "00"


def province_of(code: str) -> str:
    return code[:2] + "0000"


@dataclass(frozen=True, slots=True)
class Scope:
    scope: str  # the prefecture or province the standing is within
    level: str  # what is ranked: county | prefecture
    league: str  # in_poverty | exited | all
    year: int


def scopes(region_code: str, level: str, league: str, year: int, parent: str | None = None) -> list[Scope]:
    """Every scope a region's score ranks it in."""
    if level == "county":
        return [Scope(parent or prefecture_of(region_code), "county", league, year),
                Scope(province_of(region_code), "county", league, year)]
    return [Scope(province_of(region_code), "prefecture", ALL, year)]


@dataclass(frozen=True, slots=True)
class Ranked:
    region_code: str
    rank: int
    total: float
    grade: str


def rank(entries: Iterable[tuple[str, float, str]]) -> list[Ranked]:
    """(region_code, total, grade) → standings, best first: ties share a rank, the next skips."""
    ordered = sorted(entries, key=lambda e: (-e[1], e[0]))
    out: list[Ranked] = []
    for i, (code, total, grade) in enumerate(ordered):
        r = out[-1].rank if out and out[-1].total == total else i + 1
        out.append(Ranked(code, r, total, grade))
    return out


__all__ = ["ALL", "LEAGUES", "Ranked", "Scope", "prefecture_of", "province_of", "rank", "scopes"]
