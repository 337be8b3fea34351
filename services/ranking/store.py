"""Ranking's persistence: apply a batch of score messages, re-rank the scopes they touch, and
write standings, their history, outbox rows and offsets in one transaction."""

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import and_, delete, func, insert, select
from sqlmodel import Session

from services.events import topics
from services.kit.db import serialize_writers
from services.kit.outbox import outbox_row
from services.kit.upsert import upsert
from services.ranking.base import Outbox
from services.ranking.models import ConsumerOffset, CurrentScore, Region, Standing, StandingHistory
from services.ranking.ranks import ALL, LEAGUES, Scope, rank, scopes

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


def write(session: Session, batch: Batch, now: datetime) -> list[dict[str, Any]]:
    """Apply a batch; returns the history rows written (every standing that changed).

    One writer at a time (several ranking workers may share the database): a league's ranks are
    recomputed from every member's current score, so they must read the others' latest.
    """
    serialize_writers(session, ConsumerOffset.__table__)
    affected: set[Scope] = set()
    if batch.scores:
        codes = sorted({k[0] for k in batch.scores})
        existing = {(r.region_code, r.year): r for r in session.execute(
            select(CurrentScore).where(CurrentScore.region_code.in_(codes))).scalars()}
        rows = []
        for key, s in sorted(batch.scores.items()):
            old = existing.get(key)
            if old is not None and old.message_id >= s.message_id:
                continue  # a resent or older copy
            affected.update(scopes(s.region_code, s.level, s.league, s.year))
            if old is not None and old.league != s.league:  # a league move: it leaves the old league
                affected.update(scopes(old.region_code, old.level, old.league, old.year))
            rows.append({"region_code": s.region_code, "year": s.year, "level": s.level, "league": s.league,
                         "total": s.total, "grade": s.grade, "components": s.components,
                         "message_id": s.message_id, "as_of": s.as_of})
        upsert(session, CurrentScore.__table__, rows, keys=("region_code", "year"))
    history: list[dict[str, Any]] = []
    for scope in sorted(affected, key=lambda x: (x.year, x.level, x.league, x.scope)):
        history += rerank(session, scope, now)
    if history:
        session.execute(insert(StandingHistory.__table__), history)
    outbox = [outbox_row(Outbox, topic=topics.RANKING_STANDINGS, key=h["region_code"], now=now,
                         value=standing_message(h), headers={"region_code": h["region_code"], "scope": h["scope"]})
              for h in history if h["rank"] != h["previous_rank"]]
    outbox += batch.dead_letters
    if outbox:
        session.execute(insert(Outbox.__table__), outbox)
    if batch.offsets:
        upsert(session, ConsumerOffset.__table__, [{"topic": t, "partition": p, "next_offset": o,
                                                    "topic_id": batch.logs.get(t)}
                                                   for (t, p), o in sorted(batch.offsets.items())],
               keys=("topic", "partition"))
    return history


def members(session: Session, scope: Scope) -> list[tuple[str, float, str]]:
    """(code, total, grade) of the regions ranked in `scope`: an index range on the region code."""
    prefix = scope.scope[:2] if scope.scope.endswith("0000") else scope.scope[:4]
    q = (select(CurrentScore.region_code, CurrentScore.total, CurrentScore.grade)
         .where(CurrentScore.region_code >= prefix, CurrentScore.region_code < str(int(prefix) + 1),
                CurrentScore.year == scope.year, CurrentScore.level == scope.level,
                CurrentScore.league == scope.league))
    return [tuple(r) for r in session.execute(q).all()]


def _scope_filter(model, scope: Scope):
    return and_(model.scope == scope.scope, model.level == scope.level, model.league == scope.league,
                model.year == scope.year)


def rerank(session: Session, scope: Scope, now: datetime) -> list[dict[str, Any]]:
    """Re-rank one scope; write the standings that changed; return their history rows."""
    current = {s.region_code: s for s in session.execute(select(Standing).where(_scope_filter(Standing, scope)))
               .scalars()}
    base = {"scope": scope.scope, "level": scope.level, "league": scope.league, "year": scope.year}
    changed, history = [], []
    for r in rank(members(session, scope)):
        old = current.pop(r.region_code, None)
        if old is not None and (old.rank, old.total, old.grade) == (r.rank, r.total, r.grade):
            continue
        prev_rank, prev_total = (old.rank, old.total) if old is not None else (None, None)
        changed.append({**base, "region_code": r.region_code, "rank": r.rank, "total": r.total, "grade": r.grade,
                        "previous_rank": prev_rank, "previous_total": prev_total,
                        "movement": prev_rank - r.rank if prev_rank is not None else None, "changed_at": now})
        history.append({**base, "region_code": r.region_code, "rank": r.rank, "total": r.total, "grade": r.grade,
                        "previous_rank": prev_rank, "previous_total": prev_total, "at": now})
    for code, old in sorted(current.items()):  # left the scope: a league move
        session.execute(delete(Standing).where(_scope_filter(Standing, scope), Standing.region_code == code))
        history.append({**base, "region_code": code, "rank": None, "total": None, "grade": None,
                        "previous_rank": old.rank, "previous_total": old.total, "at": now})
    upsert(session, Standing.__table__, changed, keys=("scope", "level", "league", "year", "region_code"))
    return history


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
