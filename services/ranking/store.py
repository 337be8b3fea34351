"""Ranking's persistence: apply a batch of score messages, re-rank the scopes they touch, and
write standings, their history, outbox rows and offsets in one transaction."""

from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import orjson
from sqlalchemy import delete, func, insert, select, update
from sqlmodel import Session

from services.events import topics
from services.kit.bulk import insert_rows, upsert_rows
from services.kit.kept import KEEP_YEARS, Kept, move_count
from services.kit.outbox import outbox_row
from services.ranking.base import Outbox
from services.ranking.models import ConsumerOffset, CurrentScore, Region, Standing, StandingHistory, WriteSequence
from services.ranking.ranks import ALL, LEAGUES, Ranked, Scope, prefecture_of, province_of, rank, scopes

LEVELS = ("county", "prefecture")


@dataclass(frozen=True, slots=True)
class ScoreMessage:
    region_code: str
    year: int
    level: str
    league: str
    total: float
    grade: str
    components: str
    message_id: int
    as_of: datetime


def parse(value: bytes | None, headers: list[tuple[str, bytes]] | None) -> ScoreMessage:
    """A message of `kaohe.scoring.scores.v1`; raises ValueError naming what is wrong."""
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("a score message is a JSON object")
    h = {k: v.decode("utf-8", "replace") for k, v in headers or []}
    code, level, year, total = data.get("region_code"), data.get("level"), data.get("year"), data.get("total")
    if not (isinstance(code, str) and len(code) == 6 and code.isdigit()):
        raise ValueError(f"region_code {code!r} is not a 6-digit code")
    if level not in LEVELS:
        raise ValueError(f"level {level!r} is not one of {LEVELS}")
    league = data.get("league") if level == "county" else ALL
    if league not in LEAGUES + (ALL,):
        raise ValueError(f"league {league!r} is not one of {LEAGUES}")
    if not isinstance(year, int) or not isinstance(total, (int, float)) or not 0 <= total <= 100:
        raise ValueError("year must be an integer and total a number within [0, 100]")
    if not isinstance(data.get("grade"), str) or not h.get("outbox_id", "").isdigit():
        raise ValueError("grade and the outbox_id header are required")
    try:
        as_of = datetime.fromisoformat(str(data.get("as_of")).replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"as_of: {exc}") from exc
    return ScoreMessage(code, year, level, league, float(total), data["grade"],
                        orjson.dumps(data.get("components") or {}).decode(), int(h["outbox_id"]), as_of)


@dataclass
class Batch:
    scores: dict[tuple[str, int], ScoreMessage] = field(default_factory=dict)  # the latest per region-year
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)  # topic → id of the log the offsets are in

    def add(self, score: ScoreMessage) -> None:
        key = (score.region_code, score.year)
        if key not in self.scores or self.scores[key].message_id < score.message_id:
            self.scores[key] = score


class Current(NamedTuple):
    """What ranking keeps of a region's current score (`CurrentScore` without its components)."""

    level: str
    league: str
    total: float
    grade: str
    message_id: int


class Year:
    """One year of what the ranking writers committed, as a worker keeps it between batches: each
    region's current score, its league's totals by province, and every scope's standings."""

    __slots__ = ("scores", "leagues", "standings")

    def __init__(self) -> None:
        self.scores: dict[str, Current] = {}
        # (level, league) → province → code → (total, grade): a scope's members without a read
        self.leagues: dict[tuple[str, str], dict[str, dict[str, tuple[float, str]]]] = defaultdict(
            lambda: defaultdict(dict))
        # (level, league, scope) → code → (rank, total, grade)
        self.standings: dict[tuple[str, str, str], dict[str, tuple[int, float, str]]] = defaultdict(dict)

    def put(self, code: str, score: Current) -> None:
        old = self.scores.get(code)
        if old is not None and (old.level, old.league) != (score.level, score.league):  # a league move
            self.leagues[(old.level, old.league)][province_of(code)].pop(code, None)
        self.scores[code] = score
        self.leagues[(score.level, score.league)][province_of(code)][code] = (score.total, score.grade)

    def members(self, level: str, league: str, scopes: set[str]) -> dict[str, list[tuple[str, float, str]]]:
        """Scope → (code, total, grade) of the regions ranked in it, for `scopes` of one (level,
        league) of this year."""
        out: dict[str, list[tuple[str, float, str]]] = {scope: [] for scope in scopes}
        league_ = self.leagues.get((level, league), {})
        for province in sorted({province_of(scope) for scope in scopes}):
            for code, (total, grade) in league_.get(province, {}).items():
                for scope in {province, prefecture_of(code)}:
                    if (held := out.get(scope)) is not None:
                        held.append((code, total, grade))
        return out


class Cache(Kept):
    """The current scores and standings of the years a worker has written, kept between its
    batches instead of read again for each (the reads were most of a batch's time): trusted while
    the writers' sequence (`WriteSequence`, moved by every write under its row lock) shows no other
    write since this worker's last, and at most the latest `keep_years` years (`Kept`; about 2–3 MB
    a national year). Nothing else writes these tables."""

    def __init__(self, keep_years: int = KEEP_YEARS) -> None:
        super().__init__(keep_years)
        self.years: dict[int, Year] = {}

    def forget(self) -> None:
        self.years.clear()

    def held_years(self) -> Collection[int]:
        return self.years.keys()

    def drop_years(self, years: list[int]) -> None:
        for year in years:
            del self.years[year]

    def year(self, session: Session, year: int) -> Year:
        held = self.years.get(year)
        if held is None:
            held = self.years[year] = Year()
            for code, *score in session.execute(
                    select(CurrentScore.region_code, CurrentScore.level, CurrentScore.league, CurrentScore.total,
                           CurrentScore.grade, CurrentScore.message_id).where(CurrentScore.year == year)).all():
                held.put(code, Current(*score))
            for scope, level, league, code, *was in session.execute(
                    select(Standing.scope, Standing.level, Standing.league, Standing.region_code, Standing.rank,
                           Standing.total, Standing.grade).where(Standing.year == year)).all():
                held.standings[(level, league, scope)][code] = tuple(was)  # type: ignore[assignment]
        return held


def next_write(session: Session) -> int:
    """Take the ranking writers' lock (the sequence's row) and move the sequence; returns it.

    Several ranking workers may share the database: a league's ranks are recomputed from every
    member's current score, so one writer at a time, and what it reads next is the latest
    committed (PostgreSQL's READ COMMITTED reads anew after the row lock's wait)."""
    move = update(WriteSequence).where(WriteSequence.id == 1).values(sequence=WriteSequence.sequence + 1) \
        .returning(WriteSequence.sequence)
    return move_count(session, move, WriteSequence.__table__, {"id": 1, "sequence": 0}).sequence


def write(session: Session, batch: Batch, now: datetime, cache: Cache | None = None) -> list[dict[str, Any]]:
    """Apply a batch; returns the history rows written (every standing that changed).

    `cache`: what this worker's earlier writes left (`Cache`; the caller says `committed()` once
    the transaction is). Without one, the years the batch touches are read from the database.
    """
    cache = cache if cache is not None else Cache()
    cache.begin(next_write(session))
    affected: set[Scope] = set()
    rows = []
    for key, s in sorted(batch.scores.items()):
        year = cache.year(session, s.year)
        old = year.scores.get(s.region_code)
        if old is not None and old.message_id >= s.message_id:
            continue  # a resent or older copy
        affected.update(scopes(s.region_code, s.level, s.league, s.year))
        if old is not None and old.league != s.league:  # a league move: it leaves the old league
            affected.update(scopes(s.region_code, old.level, old.league, s.year))
        rows.append({"region_code": s.region_code, "year": s.year, "level": s.level, "league": s.league,
                     "total": s.total, "grade": s.grade, "components": s.components,
                     "message_id": s.message_id, "as_of": s.as_of})
        year.put(s.region_code, Current(s.level, s.league, s.total, s.grade, s.message_id))
    upsert_rows(session, CurrentScore.__table__, rows, keys=("region_code", "year"))
    history = rerank(session, cache, affected, now)
    if history:
        insert_rows(session, StandingHistory.__table__, history)
    outbox = [outbox_row(Outbox, topic=topics.RANKING_STANDINGS, key=h["region_code"], now=now,
                         value=standing_message(h), headers={"region_code": h["region_code"], "scope": h["scope"]})
              for h in history if h["rank"] != h["previous_rank"]]
    outbox += batch.dead_letters
    if outbox:
        insert_rows(session, Outbox.__table__, outbox)
    if batch.offsets:
        upsert_rows(session, ConsumerOffset.__table__, [{"topic": t, "partition": p, "next_offset": o,
                                                         "topic_id": batch.logs.get(t)}
                                                        for (t, p), o in sorted(batch.offsets.items())],
                    keys=("topic", "partition"))
    return history


def rerank(session: Session, cache: Cache, affected: set[Scope], now: datetime) -> list[dict[str, Any]]:
    """Re-rank the scopes; write the standings that changed; return their history rows (by
    year, level, league, scope, then rank)."""
    groups: dict[tuple[int, str, str], set[str]] = defaultdict(set)
    for scope in affected:
        groups[(scope.year, scope.level, scope.league)].add(scope.scope)
    changed, history = [], []
    for (year, level, league), codes in sorted(groups.items()):
        held = cache.year(session, year)
        ranked = held.members(level, league, codes)
        for scope in sorted(codes):
            base = {"scope": scope, "level": level, "league": league, "year": year}
            standings = rank(ranked[scope])
            left = compare(base, standings, dict(held.standings[(level, league, scope)]), now, changed, history)
            held.standings[(level, league, scope)] = {r.region_code: (r.rank, r.total, r.grade) for r in standings}
            for code in left:  # a league move: it left the scope
                session.execute(delete(Standing).where(
                    Standing.scope == scope, Standing.level == level, Standing.league == league,
                    Standing.year == year, Standing.region_code == code))
    upsert_rows(session, Standing.__table__, changed, keys=("scope", "level", "league", "year", "region_code"))
    return history


def compare(base: dict[str, Any], standings: list[Ranked], current: dict[str, tuple[int, float, str]],
            now: datetime, changed: list[dict[str, Any]], history: list[dict[str, Any]]) -> list[str]:
    """One scope's new `standings` against its `current` ones (code → rank, total, grade; emptied):
    appends the standings that changed and their history rows; returns the codes that left the
    scope (their history rows appended too)."""
    for r in standings:
        old = current.pop(r.region_code, None)
        if old == (r.rank, r.total, r.grade):
            continue
        prev_rank, prev_total = old[:2] if old is not None else (None, None)
        row = {**base, "region_code": r.region_code, "rank": r.rank, "total": r.total, "grade": r.grade,
               "previous_rank": prev_rank, "previous_total": prev_total}
        changed.append({**row, "movement": prev_rank - r.rank if prev_rank is not None else None, "changed_at": now})
        history.append({**row, "at": now})
    for code, (old_rank, old_total, _grade) in sorted(current.items()):
        history.append({**base, "region_code": code, "rank": None, "total": None, "grade": None,
                        "previous_rank": old_rank, "previous_total": old_total, "at": now})
    return sorted(current)


def standing_message(h: dict[str, Any]) -> bytes:
    return orjson.dumps({
        "region_code": h["region_code"], "scope": h["scope"], "level": h["level"], "league": h["league"],
        "year": h["year"], "rank": h["rank"], "previous_rank": h["previous_rank"], "total": h["total"],
        "previous_total": h["previous_total"], "grade": h["grade"],
        "movement": (h["previous_rank"] - h["rank"]) if h["rank"] and h["previous_rank"] else None,
        "changed_at": h["at"].isoformat()})


def stored_offsets(session: Session) -> dict[tuple[str, int], tuple[int, str | None]]:
    """(topic, partition) → (next offset, topic id of the log it was read in)."""
    rows = session.execute(select(ConsumerOffset.topic, ConsumerOffset.partition, ConsumerOffset.next_offset,
                                  ConsumerOffset.topic_id)).all()
    return {(r.topic, r.partition): (r.next_offset, r.topic_id) for r in rows}


def save_regions(session: Session, regions: list[dict[str, Any]]) -> int:
    known = set(session.execute(select(Region.code)).scalars())
    new = [{"code": r["code"], "name": r["name"], "level": r["level"], "parent_code": r.get("parent_code")}
           for r in regions if r["code"] not in known]
    if new:
        session.execute(insert(Region.__table__), new)
    return len(new)


def region_count(session: Session) -> int:
    return session.execute(select(func.count()).select_from(Region)).scalar_one()
