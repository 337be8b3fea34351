"""Scoring's persistence: rebuilding the engine from what was applied, and writing a batch's
results (events, explanations, scores, team points, outbox rows, offsets) in one transaction.
"""

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
from sqlalchemy import Engine, delete, insert, select
from sqlmodel import Session

from services.events import registry, topics
from services.events.registry import Recorded
from services.kit.outbox import outbox_row
from services.kit.upsert import upsert
from services.scoring.base import Outbox
from services.scoring.engine.engine import Change, Score, prefecture_total
from services.scoring.engine.engine import Engine as Scorer
from services.scoring.models import AppliedEvent, ConsumerOffset, County, Explanation, ScoreRow, TeamPoints, WorkerClock
from services.scoring.policy.model import Policy

EPOCH = datetime(2010, 1, 1, tzinfo=timezone.utc)


def prefecture_of(county: str) -> str:
    """GB/T 2260: a county's first four digits plus "00" name its prefecture."""
    return county[:4] + "00"


def province_of(code: str) -> str:
    return code[:2] + "0000"


def counties(session: Session) -> dict[str, str]:
    """County → status before any event, as cached from intake's regions."""
    return dict(session.execute(select(County.code, County.status)).all())


def save_counties(session: Session, rows: Iterable[dict[str, Any]]) -> int:
    """Cache counties (code, status before any event); existing rows are kept as they are."""
    known = set(session.execute(select(County.code)).scalars())
    new = [{"code": r["code"], "prefecture_code": r.get("parent_code") or prefecture_of(r["code"]),
            "status": r.get("baseline_status") or "in_poverty"} for r in rows if r["code"] not in known]
    if new:
        session.execute(insert(County), new)
    return len(new)


def stored_records(engine: Engine, page: int = 5000) -> Iterator[str]:
    """Every event this worker applied, as published, in intake's sequence order (page by page)."""
    after = -1
    while True:
        with Session(engine) as s:
            rows = s.execute(select(AppliedEvent.sequence, AppliedEvent.record)
                             .where(AppliedEvent.sequence > after).order_by(AppliedEvent.sequence)
                             .limit(page)).all()
        if not rows:
            return
        for row in rows:
            yield row.record
        after = rows[-1].sequence


def stored_as_of(engine: Engine) -> datetime:
    with Session(engine) as s:
        clock = s.get(WorkerClock, 1)
        return clock.as_of if clock else EPOCH


def rebuild(engine: Engine, policy: Policy, statuses: Mapping[str, str], *, as_of: datetime | None = None
            ) -> Scorer:
    """The engine as committed: every applied event replayed, up to `as_of` (default: the stored clock)."""
    scorer = Scorer(policy, statuses, start=EPOCH)
    for record in stored_records(engine):
        scorer.apply(registry.decode_record(record))
    scorer.advance(as_of or stored_as_of(engine))
    return scorer


def recompute(session: Session, policy: Policy, statuses: Mapping[str, str], records: Iterable[str | bytes], *,
              as_of: datetime, now: datetime, replace_applied: bool, chunk: int = 5000) -> Scorer:
    """Score `records` (intake's export, or our own copy) from scratch under `policy`, in the caller's
    transaction: explanations and team points are replaced, every score restamped (a message goes
    out, with the total it replaces, for each that moved), and scores no replayed event supports
    are deleted.

    With `replace_applied`, the applied events become exactly `records` (a rebuild from intake).
    Streams `records` in chunks: memory holds the engine, not the history.
    """
    scorer = Scorer(policy, statuses, start=EPOCH)
    for table in (Explanation, TeamPoints) + ((AppliedEvent,) if replace_applied else ()):
        session.execute(delete(table))
    pending: list[str | bytes] = []

    def flush() -> None:
        batch = Batch()
        for raw in pending:
            record = registry.decode_record(raw)
            batch.changes += scorer.apply(record)
            batch.applied.append((record, raw))
        _insert_events(session, batch.applied if replace_applied else [], batch.changes)
        pending.clear()

    for raw in records:
        pending.append(raw)
        if len(pending) >= chunk:
            flush()
    flush()
    write(session, scorer, Batch(changes=scorer.advance(as_of), rescore_all=True), now=now, clock_moved=True)
    return scorer


@dataclass
class Batch:
    """What one poll produced, ready to be written in one transaction."""

    applied: list[tuple[Recorded, str | bytes]] = field(default_factory=list)  # with the record as published
    changes: list[Change] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    offsets: dict[tuple[str, int], tuple[int, str | None]] = field(default_factory=dict)
    rescore_all: bool = False  # write every county-year's score, not only those `changes` touched


def _score_row(score: Score, *, level: str, parent: str, cause: str, policy_id: str, as_of: datetime) -> dict:
    return {"region_code": score.region_code, "year": score.year, "level": level, "parent_code": parent,
            "league": score.league if level == "county" else None, "total": score.total, "grade": score.grade,
            "gated": score.gated, "components": orjson.dumps(score.components).decode(), "policy_id": policy_id,
            "cause": cause, "as_of": as_of}


def prefecture_score(scorer: Scorer, prefecture: str, year: int) -> Score | None:
    members = [scorer.score(county, y) for (county, y) in sorted(scorer.years)
               if y == year and prefecture_of(county) == prefecture]
    total = prefecture_total(members)
    if total is None:
        return None
    grade = next(g.name for g in scorer.policy.grades if total >= g.min)
    components: dict[str, float | None] = {}
    for c in ("daily_management", "inspections", "rectification", "year_end"):
        values = [m.components[c] for m in members if m.components[c] is not None]
        components[c] = round(sum(values) / len(values), 4) if values else None
    return Score(prefecture, year, "", components, total, grade, False)


def write(session: Session, scorer: Scorer, batch: Batch, *, now: datetime, clock_moved: bool = False) -> int:
    """Persist a batch (and/or a clock advance); returns how many score rows changed."""
    policy_id = scorer.policy.id
    _insert_events(session, batch.applied, batch.changes)
    causes = {(c.region_code, c.year): c.cause for c in batch.changes}
    touched = sorted(scorer.years) if batch.rescore_all else sorted(causes)
    rows = []
    for county, year in touched:
        s = scorer.score(county, year)
        rows.append(_score_row(s, level="county", parent=prefecture_of(county),
                               cause=causes.get((county, year), "recomputed"),
                               policy_id=policy_id, as_of=scorer.as_of))
    for prefecture, year in sorted({(prefecture_of(c), y) for c, y in touched}):
        s = prefecture_score(scorer, prefecture, year)
        if s is not None:
            rows.append(_score_row(s, level="prefecture", parent=province_of(prefecture), cause="counties",
                                   policy_id=policy_id, as_of=scorer.as_of))
    previous = _previous_totals(session, [(r["region_code"], r["year"]) for r in rows])
    changed = [r for r in rows if previous.get((r["region_code"], r["year"])) != (r["total"], r["grade"],
                                                                                  r["components"])]
    # a recomputation restamps every row (policy, as-of) but announces only the totals that moved
    upsert(session, ScoreRow.__table__, rows if batch.rescore_all else changed, keys=("region_code", "year"))
    if batch.rescore_all:
        keep = {(r["region_code"], r["year"]) for r in rows}
        for code, year in session.execute(select(ScoreRow.region_code, ScoreRow.year)).all():
            if (code, year) not in keep:  # no replayed event supports it (not announced: see docs/scoring.md)
                session.execute(delete(ScoreRow).where(ScoreRow.region_code == code, ScoreRow.year == year))
    outbox = [outbox_row(Outbox, topic=topics.SCORING_SCORES, key=r["region_code"], now=now,
                         value=_score_message(r, previous.get((r["region_code"], r["year"]))),
                         headers={"region_code": r["region_code"], "level": r["level"], "year": str(r["year"])})
              for r in changed]
    outbox += batch.dead_letters
    if outbox:
        session.execute(insert(Outbox.__table__), outbox)
    _team_points(session, scorer, now)
    if batch.offsets:
        upsert(session, ConsumerOffset.__table__, [
            {"topic": t, "partition": p, "next_offset": o, "last_event_id": eid}
            for (t, p), (o, eid) in sorted(batch.offsets.items())], keys=("topic", "partition"))
    if clock_moved:
        upsert(session, WorkerClock.__table__, [{"id": 1, "as_of": scorer.as_of, "policy_id": policy_id}],
               keys=("id",))
    return len(changed)


def _insert_events(session: Session, applied: list[tuple[Recorded, str | bytes]], changes: list[Change]) -> None:
    if applied:
        session.execute(insert(AppliedEvent.__table__), [
            {"event_id": r.event.event_id, "sequence": r.sequence, "region_code": r.event.region_code,
             "record": raw if isinstance(raw, str) else raw.decode()} for r, raw in applied])
    if changes:
        session.execute(insert(Explanation.__table__), [
            {"region_code": c.region_code, "year": c.year, "component": c.component, "points": c.points,
             "rule": c.rule, "cause": c.cause, "policy_id": c.policy_id, "at": c.at} for c in changes])


def _previous_totals(session: Session, keys: list[tuple[str, int]]) -> dict[tuple[str, int], tuple]:
    if not keys:
        return {}
    codes = sorted({k[0] for k in keys})
    rows = session.execute(select(ScoreRow.region_code, ScoreRow.year, ScoreRow.total, ScoreRow.grade,
                                  ScoreRow.components).where(ScoreRow.region_code.in_(codes))).all()
    wanted = set(keys)
    return {(r.region_code, r.year): (r.total, r.grade, r.components) for r in rows
            if (r.region_code, r.year) in wanted}


def _score_message(row: dict, previous: tuple | None) -> bytes:
    return orjson.dumps({
        "region_code": row["region_code"], "level": row["level"], "league": row["league"], "year": row["year"],
        "total": row["total"], "grade": row["grade"], "gated": row["gated"],
        "components": orjson.loads(row["components"]), "previous_total": previous[0] if previous else None,
        "previous_grade": previous[1] if previous else None, "policy_version": row["policy_id"],
        "cause": row["cause"], "as_of": registry.iso_utc(row["as_of"]),
    })


def _team_points(session: Session, scorer: Scorer, now: datetime) -> None:
    teams = sorted({f.team_id for f in scorer.findings.values()} | {t for t, _, _ in scorer.absences})
    rows = []
    for team in teams:
        detail = scorer.inspector_points(team)
        rows.append({"team_id": team, "points": detail["points"], "detail": orjson.dumps(detail).decode(),
                     "as_of": scorer.as_of})
    upsert(session, TeamPoints.__table__, rows, keys=("team_id",))
