"""Scoring's persistence: rebuilding the engine from what was applied, and writing a batch's
results (events, explanations, scores, team points, outbox rows, offsets) in one transaction.
"""

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import islice
from typing import Any

import orjson
from sqlalchemy import Engine, delete, func, insert, select, update
from sqlmodel import Session

from services.events import registry, topics
from services.kit import heap
from services.kit.bulk import insert_rows, upsert_rows
from services.kit.kept import KEEP_YEARS, Kept, move_count
from services.kit.logs import message_ids
from services.kit.outbox import outbox_row
from services.kit.upsert import upsert
from services.scoring.base import Outbox
from services.scoring.engine import view
from services.scoring.engine.engine import Change, Score, prefecture_total
from services.scoring.engine.engine import Engine as Scorer
from services.scoring.models import (
    AppliedBatch,
    ConsumerOffset,
    County,
    ExplanationBatch,
    ScoreRow,
    TeamPoints,
    WorkerClock,
)
from services.scoring.policy.model import Policy

EPOCH = datetime(2010, 1, 1, tzinfo=timezone.utc)
SCORE_CHUNK = 2000  # score rows a write compares, upserts and announces at a time


def prefecture_of(county: str) -> str:
    """GB/T 2260: a county's first four digits plus "00" name its prefecture."""
    return county[:4] + "00"


def province_of(code: str) -> str:
    return code[:2] + "0000"


def counties(session: Session) -> dict[str, str]:
    """County → status before any event, as cached from intake's regions."""
    return dict(session.execute(select(County.code, County.status)).all())


def exit_years(session: Session) -> dict[str, int]:
    """County → its baseline exit year (the exited counties whose year intake's regions gave)."""
    return dict(session.execute(select(County.code, County.exit_year).where(County.exit_year.is_not(None))).all())


def held_provinces(engine: Engine) -> set[str]:
    """The provinces (two-digit prefixes) of the counties cached from intake."""
    with Session(engine) as s:
        return set(s.execute(select(func.substr(County.code, 1, 2)).distinct()).scalars())


def save_counties(session: Session, rows: Iterable[dict[str, Any]]) -> int:
    """Cache counties (code, status before any event, its exit year); returns how many were new.
    Existing rows are kept as they are, but for an exit year cached before it was kept (None)."""
    known = dict(session.execute(select(County.code, County.exit_year)).all())
    new, years = [], {}
    for r in rows:
        exit_year = r.get("baseline_exit_year")
        if r["code"] not in known:
            new.append({"code": r["code"], "prefecture_code": r.get("parent_code") or prefecture_of(r["code"]),
                        "status": r.get("baseline_status") or "in_poverty", "exit_year": exit_year})
        elif exit_year is not None and known[r["code"]] is None:
            years[r["code"]] = exit_year
    if new:
        session.execute(insert(County), new)
    for code, year in sorted(years.items()):  # once, after the upgrade that added the column
        session.execute(update(County).where(County.code == code).values(exit_year=year))
    return len(new)


def stored_records(engine: Engine, page: int = 4, owned: Callable[[str], bool] | None = None) -> Iterator[bytes]:
    """Every event applied (of the counties `owned` accepts), as published, in the order applied
    (each county's in intake's order). `page`: batches read at a time (a poll's is a few MB)."""
    after = -1
    while True:
        with Session(engine) as s:
            rows = s.execute(select(AppliedBatch.id, AppliedBatch.regions, AppliedBatch.records)
                             .where(AppliedBatch.id > after).order_by(AppliedBatch.id).limit(page)).all()
        if not rows:
            return
        for row in rows:
            records = row.records.split(b"\n")
            if owned is None:
                yield from records
                continue
            regions = row.regions
            for i, record in enumerate(records):
                if owned(regions[6 * i:6 * i + 6]):
                    yield record
        after = rows[-1].id


def applied_count(session: Session) -> int:
    """How many events were applied."""
    return session.execute(select(func.coalesce(func.sum(AppliedBatch.events), 0))).scalar_one()


def applied_ids(session: Session) -> list[str]:
    """The ids of the events applied, in the order applied (a duplicate would appear twice)."""
    ids = []
    for (records,) in session.execute(select(AppliedBatch.records).order_by(AppliedBatch.id)):
        ids += [orjson.loads(r)["event_id"] for r in records.split(b"\n")]
    return ids


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a score's explanation: `component` moved by `points` because of `cause`."""

    component: str
    points: float
    rule: str
    cause: str
    policy_id: str
    at: datetime


def explanation_lines(session: Session, region_code: str | None = None, year: int | None = None, *,
                      start: tuple[int, int] = (0, 0), limit: int | None = None
                      ) -> Iterator[tuple[tuple[int, int], str, int, Line]]:
    """The explanation lines (of one county-year, or all), oldest first, from position `start`
    (batch id, line within it): (position, region code, year, line), at most `limit` of them."""
    q = select(ExplanationBatch).where(ExplanationBatch.id >= start[0]).order_by(ExplanationBatch.id)
    if region_code is not None:
        q = q.where(ExplanationBatch.region_code == region_code, ExplanationBatch.year == year)
    if limit is not None:
        q = q.limit(limit + 1)  # every batch holds a line at least
    n = 0
    for row in session.execute(q).scalars():
        for i, (component, points, rule, cause, at) in enumerate(orjson.loads(row.lines)):
            if (row.id, i) < start:
                continue
            if limit is not None and n == limit:
                return
            n += 1
            yield (row.id, i), row.region_code, row.year, Line(component, points, rule, cause, row.policy_id,
                                                              datetime.fromisoformat(at).astimezone(timezone.utc))


class Stale(Exception):
    """This worker's engine or partitions are out of date: another worker recomputed every score,
    or took over a partition. Nothing was written; rebuild the engine from the database and retry."""


@dataclass(frozen=True)
class Clock:
    generation: int
    as_of: datetime
    policy_id: str  # "" before the first write
    writes: int = 0  # every write moves it (`Stored`)


def lock(session: Session) -> Clock:
    """Take the scoring writers' lock (the worker clock's row), move its count of writes, and read
    the clock.

    Every write of every worker holds it: workers apply events in parallel but write one at a
    time, so a prefecture's aggregate reads its counties' committed rows, and a recomputation
    (which moves the generation) excludes everyone else.
    """
    touch = update(WorkerClock).where(WorkerClock.id == 1).values(writes=WorkerClock.writes + 1).returning(
        WorkerClock.generation, WorkerClock.as_of, WorkerClock.policy_id, WorkerClock.writes)
    row = move_count(session, touch, WorkerClock.__table__, {"id": 1, "as_of": EPOCH, "policy_id": "", "generation": 0})
    return Clock(row.generation, row.as_of, row.policy_id, row.writes)


Position = tuple[int, str | None, str | None]  # next offset, last event id, topic id of the log


def claim(session: Session, topic: str, partitions: Collection[int], owner: str) -> tuple[dict[int, Position], Clock]:
    """Make `owner` the writer of `partitions` (after a rebalance assigned them); returns the stored
    positions of those already read, and the clock. Holds the lock."""
    clock = lock(session)
    stored = positions(session, topic, partitions)
    unread = (-1, None, None)
    upsert(session, ConsumerOffset.__table__, [
        dict(zip(("next_offset", "last_event_id", "topic_id"), stored.get(p, unread)), topic=topic, partition=p,
             owner=owner) for p in sorted(partitions)], keys=("topic", "partition"))
    return stored, clock


def positions(session: Session, topic: str, partitions: Collection[int]) -> dict[int, Position]:
    """The stored positions of `partitions` already read, as `claim` returns them."""
    return {p: (o, eid, tid) for p, o, eid, tid in session.execute(
        select(ConsumerOffset.partition, ConsumerOffset.next_offset, ConsumerOffset.last_event_id,
               ConsumerOffset.topic_id).where(ConsumerOffset.topic == topic)).all() if p in partitions and o >= 0}


def stored_as_of(engine: Engine) -> datetime:
    with Session(engine) as s:
        clock = s.get(WorkerClock, 1)
        return clock.as_of if clock else EPOCH


def rebuild(engine: Engine, policy: Policy, statuses: Mapping[str, str], *, as_of: datetime | None = None,
            exit_years: Mapping[str, int] | None = None, owned: Callable[[str], bool] | None = None,
            meanwhile: Callable[[], None] | None = None) -> Scorer:
    """The engine as committed: every applied event (of the counties `owned` accepts) replayed, up to
    `as_of` (default: the stored clock). `statuses`, `exit_years`: the counties' baseline
    (`counties`, `exit_years`). `meanwhile` is called every few thousand events."""
    scorer = Scorer(policy, statuses, start=EPOCH, exit_years=exit_years)
    for i, record in enumerate(stored_records(engine, owned=owned)):
        scorer.apply(view.decode(record))
        if meanwhile is not None and i % 5000 == 4999:
            meanwhile()
    scorer.advance(as_of or stored_as_of(engine))
    return scorer


def recompute(session: Session, policy: Policy, statuses: Mapping[str, str], records: Iterable[str | bytes], *,
              as_of: datetime, now: datetime, replace_applied: bool, exit_years: Mapping[str, int] | None = None,
              unless_current: bool = False, chunk: int = 5000) -> Scorer | None:
    """Score `records` (intake's export, or our own copy) from scratch under `policy`, in the caller's
    transaction, holding the writers' lock (and moving the generation, so every worker rebuilds):
    explanations and team points are replaced, every score restamped (a message goes
    out, with the total it replaces, for each that moved), and scores no replayed event supports
    are deleted.

    With `replace_applied`, the applied events become exactly `records` (a rebuild from intake).
    Streams `records` in chunks: memory holds the engine, not the history. With `unless_current`,
    nothing is done (None) if the stored scores are under `policy` once the lock is held: another
    worker switched to it while this one waited.
    """
    clock = lock(session)
    if unless_current and clock.policy_id == policy.id:
        return None
    scorer = Scorer(policy, statuses, start=EPOCH, exit_years=exit_years)
    for table in (ExplanationBatch, TeamPoints) + ((AppliedBatch,) if replace_applied else ()):
        session.execute(delete(table))
    pending: list[str | bytes] = []

    def flush() -> None:
        with heap.deferred():  # a chunk's garbage goes at its end (as a poll's: Worker.submit)
            batch = Batch()
            for raw in pending:
                record = view.decode(raw)
                batch.changes += scorer.apply(record)
                batch.applied.append((record.event.region_code, raw))
            _insert_events(session, batch.applied if replace_applied else [], batch.changes)
            pending.clear()
            del batch

    for raw in records:
        pending.append(raw)
        if len(pending) >= chunk:
            flush()
    flush()
    write(session, scorer, Batch(changes=scorer.advance(as_of), rescore_all=True), now=now, clock_moved=True,
          new_generation=True)
    return scorer


@dataclass
class Batch:
    """What one poll produced, ready to be written in one transaction."""

    # (region code, the record as published) of each event applied: the parsed record itself is not
    # kept, and so is freed as soon as it is applied, not with the whole poll's after it
    applied: list[tuple[str, str | bytes]] = field(default_factory=list)
    events: int = 0  # how many were applied (`applied` is dropped once its rows are made: `prepare`)
    changes: list[Change] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    offsets: dict[tuple[str, int], Position] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)  # event id → the consumed message it came in
    ids: dict[str, dict[str, str]] = field(default_factory=dict)  # cause → the ids it came with (request_id)
    rescore_all: bool = False  # write every county-year's score, not only those `changes` touched


def _score_row(score: Score, *, level: str, parent: str, cause: str, policy_id: str, as_of: datetime) -> dict:
    return {"region_code": score.region_code, "year": score.year, "level": level, "parent_code": parent,
            "league": score.league if level == "county" else None, "total": score.total, "grade": score.grade,
            "gated": score.gated, "components": orjson.dumps(score.components).decode(), "policy_id": policy_id,
            "cause": cause, "as_of": as_of}


def aggregate(policy: Policy, prefecture: str, year: int, members: list[Score]) -> Score | None:
    """A prefecture's score from its counties' (the policy's aggregate; components averaged)."""
    total = prefecture_total(members)
    if total is None:
        return None
    grade = next(g.name for g in policy.grades if total >= g.min)
    components: dict[str, float | None] = {}
    for c in ("daily_management", "inspections", "rectification", "year_end"):
        values = [m.components[c] for m in members if m.components[c] is not None]
        components[c] = round(sum(values) / len(values), 4) if values else None
    return Score(prefecture, year, "", components, total, grade, False)


def prefecture_score(scorer: Scorer, prefecture: str, year: int) -> Score | None:
    """From one engine that holds every county of the prefecture (a recomputation, the tests)."""
    members = [scorer.score(county, y) for (county, y) in sorted(scorer.years)
               if y == year and prefecture_of(county) == prefecture]
    return aggregate(scorer.policy, prefecture, year, members)


class Stored(Kept):
    """The score rows (their `PUBLISHED` fields) and partition owners the scoring writers last
    committed, as one writer keeps them between its writes instead of reading them again for each:
    the rows it compares with, and the county rows a touched prefecture is aggregated from.

    Trusted only while the worker clock's count of writes (moved by every write under the row's
    lock: `lock`) shows no other write since this writer's last (`Kept`): another worker's, the
    worker's own clock tick or recomputation, or one of ours that did not commit, and the years
    are read again. Without a writer's (`persist(..., stored=None)`), a write reads the years it
    touches. At most the latest `keep_years` years are kept (`Kept`; about 1–2 MB a national year)."""

    def __init__(self, keep_years: int = KEEP_YEARS) -> None:
        super().__init__(keep_years)
        self.forget()

    def held_years(self) -> Collection[int]:
        return self.years

    def drop_years(self, years: list[int]) -> None:
        # (rare: a new year begun) one pass over the rows, whatever the count of years dropped
        dropped = set(years)
        self.rows = {key: row for key, row in self.rows.items() if key[1] not in dropped}
        self.counties = {key: held for key, held in self.counties.items() if key[1] not in dropped}
        self.years -= dropped

    def forget(self) -> None:
        self.years: set[int] = set()
        self.rows: dict[tuple[str, int], tuple] = {}  # (region, year) → PUBLISHED
        self.counties: dict[tuple[str, int], set[str]] = {}  # (prefecture, year) → its counties with rows
        self.owners: dict[str, dict[int, str | None]] = {}  # topic → partition → owner

    def published(self, session: Session, keys: Iterable[tuple[str, int]]) -> dict[tuple[str, int], tuple]:
        """The stored rows' `PUBLISHED` fields (total and grade first) of these (region, year) keys."""
        keys = list(keys)
        self._load(session, {y for _, y in keys})
        return {k: row for k in keys if (row := self.rows.get(k)) is not None}

    def prefecture_scores(self, session: Session, policy: Policy, keys: set[tuple[str, int]]) -> list[Score]:
        """Prefecture scores from their counties' rows as this transaction sees them: a worker owns
        only some counties of a prefecture, and the lock makes the others' rows final."""
        self._load(session, {y for _, y in keys})
        scores = []
        for prefecture, year in sorted(keys):
            members = []
            for county in sorted(self.counties.get((prefecture, year), ())):
                row = self.rows[(county, year)]
                members.append(Score(county, year, "", orjson.loads(row[COMPONENTS]), row[TOTAL], "", False))
            if (score := aggregate(policy, prefecture, year, members)) is not None:
                scores.append(score)
        return scores

    def owners_of(self, session: Session, topic: str) -> dict[int, str | None]:
        """Partition → the worker that may write its results. Only a claim moves an owner (a write
        stores its own partitions' again), and a claim takes the lock: it moves the count."""
        held = self.owners.get(topic)
        if held is None:
            held = self.owners[topic] = dict(session.execute(
                select(ConsumerOffset.partition, ConsumerOffset.owner).where(ConsumerOffset.topic == topic)).all())
        return held

    def saved(self, rows: Iterable[dict[str, Any]]) -> None:
        """Rows this write upserted."""
        for r in rows:
            key = (r["region_code"], r["year"])
            self.rows[key] = tuple(r[f] for f in PUBLISHED)
            if r["level"] == "county":
                self.counties.setdefault((r["parent_code"], r["year"]), set()).add(r["region_code"])

    def _load(self, session: Session, years: set[int]) -> None:
        if missing := sorted(years - self.years):
            for code, year, *published in session.execute(
                    select(ScoreRow.region_code, ScoreRow.year, *(getattr(ScoreRow, f) for f in PUBLISHED))
                    .where(ScoreRow.year.in_(missing))).all():
                self.rows[(code, year)] = row = tuple(published)
                if row[LEVEL] == "county":
                    self.counties.setdefault((row[PARENT], year), set()).add(code)
            self.years.update(missing)


@dataclass(frozen=True)
class Fence:
    """What a worker's engine was built from: the generation it read, and the partitions it claimed
    (as `owner`). A write under a different generation, or to a partition another worker has since
    claimed, raises `Stale` and changes nothing."""

    generation: int
    owner: str | None = None
    partitions: frozenset[int] = frozenset()


@dataclass
class Prepared:
    """A batch (and/or a clock advance) as the rows it writes, taken from the engine: `persist`
    needs nothing more of the engine, so the worker applies its next batch while this one is
    written (one write in flight)."""

    policy: Policy
    as_of: datetime
    now: datetime
    applied: list[dict[str, Any]]
    explanations: list[dict[str, Any]]
    # score rows of the county-years the batch touched: a list; on a rescore (`batch.rescore_all`)
    # every county-year's, made as they are written (with the engine at its largest, a national
    # store's rows and their messages at once were the worker's peak memory)
    counties: Iterable[dict[str, Any]]
    # a list; on a rescore (`batch.rescore_all`, written at once by `write`, never in flight) the
    # rows are made as they are written, from the engine: every (team, county) of a national year
    # is tens of thousands of rows, tens of MB as one list
    team_points: Iterable[dict[str, Any]]
    batch: Batch
    clock_moved: bool = False
    new_generation: bool = False
    fence: Fence | None = None


def prepare(scorer: Scorer, batch: Batch, *, now: datetime, clock_moved: bool = False, fence: Fence | None = None,
            new_generation: bool = False) -> Prepared:
    """The rows of `batch` as the engine holds them now (drains the engine's team changes)."""
    policy_id = scorer.policy.id
    applied, explanations = _event_rows(batch.applied, batch.changes)
    # every county-year an event or the clock may have moved, not only those with lines: a league,
    # a gate lifted or a first (clean) row moves no component. A row is written only if it differs
    # (`_save_scores`); its cause is its last line's, or else the last event that touched it
    touched_by = scorer.drain_touched()
    causes = {} if batch.rescore_all else touched_by
    causes.update({(c.region_code, c.year): c.cause for c in batch.changes})
    touched = sorted(scorer.years) if batch.rescore_all else sorted(causes)
    # the ids a score's cause came with (its request id at intake), for the causes that are some score's
    for cause in set(causes.values()):
        if (message := batch.sources.get(cause)) is not None:
            batch.ids[cause] = {"event_id": cause, **message_ids(message)}
    # the rows hold what is written: the records as published, messages and changes go now, not when
    # the write (in flight while the next poll is applied) is done
    batch.events += len(batch.applied)
    batch.applied, batch.sources, batch.changes = [], {}, []
    rows = (_score_row(scorer.score(county, year), level="county", parent=prefecture_of(county),
                       cause=causes.get((county, year), "recomputed"), policy_id=policy_id, as_of=scorer.as_of)
            for county, year in touched)
    counties = rows if batch.rescore_all else list(rows)
    moved = scorer.drain_team_changes()
    # what events and time moved (a passing deadline credits a finding); every county's on a rescore
    team_points = _all_team_point_rows(scorer) if batch.rescore_all else _team_point_rows(scorer, moved)
    return Prepared(scorer.policy, scorer.as_of, now, applied, explanations, counties, team_points, batch,
                    clock_moved, new_generation, fence)


def write(session: Session, scorer: Scorer, batch: Batch, *, now: datetime, clock_moved: bool = False,
          fence: Fence | None = None, new_generation: bool = False) -> int:
    """Persist a batch (and/or a clock advance) under the writers' lock; returns how many score rows
    changed. `new_generation`: every score was recomputed (other workers must rebuild their engines)."""
    return persist(session, prepare(scorer, batch, now=now, clock_moved=clock_moved, fence=fence,
                                    new_generation=new_generation))


def persist(session: Session, p: Prepared, stored: Stored | None = None) -> int:
    """Write what `prepare` took from the engine, under the writers' lock, fenced; returns how many
    score rows changed. Touches no engine: it may run in another thread than the one applying.
    `stored`: a writer's rows from its earlier writes (the caller says `committed()` once the
    transaction is)."""
    clock = lock(session)
    stored = stored if stored is not None else Stored()
    stored.begin(clock.writes)
    batch, fence = p.batch, p.fence
    if fence is not None:
        if clock.generation != fence.generation:
            raise Stale(f"scores were recomputed (generation {clock.generation}, engine {fence.generation})")
        lost = {part for part, o in stored.owners_of(session, topics.INTAKE_EVENTS).items()
                if part in fence.partitions and o != fence.owner}
        if lost:
            raise Stale(f"partitions {sorted(lost)} were claimed by another worker")
    insert_rows(session, AppliedBatch.__table__, p.applied)
    insert_rows(session, ExplanationBatch.__table__, p.explanations)
    # a county's message carries the ids of the event that caused it (its request id at intake),
    # so one request can be followed through every hop; a prefecture's has no single cause
    as_of = registry.iso_utc(p.as_of)  # (every row of a write has the engine's)
    grades = [g.name for g in p.policy.grades]

    def announced(changed: list[tuple[dict, tuple | None]]) -> list[dict[str, Any]]:
        return [outbox_row(Outbox, topic=topics.SCORING_SCORES, key=r["region_code"], now=p.now,
                           value=_score_message(r, previous, registry.iso_utc(r["as_of"]) if r["as_of"] != p.as_of
                                                else as_of, grades),
                           headers={"region_code": r["region_code"], "level": r["level"], "year": str(r["year"]),
                                    **batch.ids.get(r["cause"], {})})
                for r, previous in changed]

    moved, touched, rows = 0, set(), iter(p.counties)
    while chunk := list(islice(rows, SCORE_CHUNK)):  # a batch's rows are one chunk; a rescore's, several
        touched.update((r["region_code"], r["year"]) for r in chunk)
        changed = _save_scores(session, stored, chunk, restamp=batch.rescore_all)
        insert_rows(session, Outbox.__table__, announced(changed))
        moved += len(changed)
        del chunk, changed
    if batch.rescore_all:  # before the prefectures are aggregated from the county rows
        _delete_unsupported(session, touched, level="county")
        stored.forget()
    prefectures = [_score_row(s, level="prefecture", parent=province_of(s.region_code), cause="counties",
                              policy_id=p.policy.id, as_of=p.as_of)
                   for s in stored.prefecture_scores(session, p.policy, {(prefecture_of(c), y) for c, y in touched})]
    changed = _save_scores(session, stored, prefectures, restamp=batch.rescore_all)
    if batch.rescore_all:
        _delete_unsupported(session, touched | {(r["region_code"], r["year"]) for r in prefectures})
        stored.forget()
    insert_rows(session, Outbox.__table__, announced(changed) + batch.dead_letters)
    rows = iter(p.team_points)
    while chunk := list(islice(rows, 5000)):
        upsert_rows(session, TeamPoints.__table__, chunk, keys=("team_id", "region_code"))
    if batch.offsets:
        owner = {"owner": fence.owner} if fence is not None and fence.owner else {}
        upsert_rows(session, ConsumerOffset.__table__, [
            {"topic": t, "partition": part, "next_offset": o, "last_event_id": eid, "topic_id": tid, **owner}
            for (t, part), (o, eid, tid) in sorted(batch.offsets.items())], keys=("topic", "partition"))
    if p.clock_moved or p.new_generation:
        session.execute(update(WorkerClock).where(WorkerClock.id == 1).values(
            as_of=max(clock.as_of, p.as_of), policy_id=p.policy.id,
            generation=clock.generation + (1 if p.new_generation else 0)))
    return moved + len(changed)


def _delete_unsupported(session: Session, keep: set[tuple[str, int]], *, level: str | None = None) -> None:
    """A rescore: delete the score rows (of `level`, or any) no replayed event supports, those not
    in `keep` (not announced: see docs/scoring.md)."""
    q = select(ScoreRow.region_code, ScoreRow.year)
    for code, year in session.execute(q if level is None else q.where(ScoreRow.level == level)).all():
        if (code, year) not in keep:
            session.execute(delete(ScoreRow).where(ScoreRow.region_code == code, ScoreRow.year == year))


def resend_scores(session: Session, *, owned: Callable[[str], bool], now: datetime) -> int:
    """Every current score of the owned counties and of their prefectures as a score message again
    (its previous total and grade its own: nothing moved), in the outbox; returns how many. The
    caller holds the writers' lock: a newer score of a shared prefecture is never overtaken by this
    copy (ranking keeps the message with the highest outbox id)."""
    rows = session.execute(select(ScoreRow)).scalars().all()
    counties = [r for r in rows if r.level == "county" and owned(r.region_code)]
    prefectures = {prefecture_of(r.region_code) for r in counties}
    chosen = counties + [r for r in rows if r.level == "prefecture" and r.region_code in prefectures]
    columns = [c.name for c in ScoreRow.__table__.columns]
    outbox = []
    for r in chosen:
        row = {c: getattr(r, c) for c in columns}
        outbox.append(outbox_row(Outbox, topic=topics.SCORING_SCORES, key=r.region_code, now=now,
                                 value=_score_message(row, (r.total, r.grade), registry.iso_utc(r.as_of)),
                                 headers={"region_code": r.region_code, "level": r.level, "year": str(r.year),
                                          "resent": "log replaced"}))
    insert_rows(session, Outbox.__table__, outbox)
    return len(outbox)


PUBLISHED = ("total", "grade", "gated", "league", "components", "policy_id", "level", "parent_code")  # of a row
TOTAL, COMPONENTS, LEVEL, PARENT = (PUBLISHED.index(f) for f in ("total", "components", "level", "parent_code"))


def _save_scores(session: Session, stored: Stored, rows: list[dict], *, restamp: bool
                 ) -> list[tuple[dict, tuple | None]]:
    """Upsert the rows in which any published field moved (every row when restamping: a
    recomputation restamps as-of but announces only what moved); returns those that moved with what
    they replace (their published fields, total and grade first)."""
    previous = stored.published(session, [(r["region_code"], r["year"]) for r in rows])
    changed = [(r, previous.get((r["region_code"], r["year"]))) for r in rows
               if previous.get((r["region_code"], r["year"])) != tuple(r[f] for f in PUBLISHED)]
    upsert_rows(session, ScoreRow.__table__, rows if restamp else [r for r, _ in changed], keys=("region_code", "year"))
    stored.saved(r for r, _ in changed)  # (a restamp moves no published field)
    return changed


def _event_rows(applied: list[tuple[str, str | bytes]], changes: list[Change]
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The applied_batch row (none for no event) and the explanation_batch rows of a batch."""
    return _applied_rows(applied), _explanation_rows(changes)


def _applied_rows(applied: list[tuple[str, str | bytes]]) -> list[dict[str, Any]]:
    if not applied:
        return []
    records = []
    for _, raw in applied:
        raw = raw.encode() if isinstance(raw, str) else raw
        if b"\n" in raw:  # JSON whitespace (a record not from intake): compacted, one record a line
            raw = orjson.dumps(orjson.loads(raw))
        records.append(raw)
    return [{"events": len(records), "regions": "".join([code for code, _ in applied]),
             "records": b"\n".join(records)}]


def _explanation_rows(changes: list[Change]) -> list[dict[str, Any]]:
    """One row per county-year (and policy) of `changes`, its lines in order."""
    lines: dict[tuple[str, int, str], list[tuple]] = {}
    for c in changes:
        key = (c.region_code, c.year, c.policy_id)
        line = (c.component, c.points, c.rule, c.cause, c.at)
        if (held := lines.get(key)) is None:
            lines[key] = [line]
        else:
            held.append(line)
    return [{"region_code": code, "year": year, "policy_id": policy_id, "lines": orjson.dumps(held).decode()}
            for (code, year, policy_id), held in lines.items()]


def _insert_events(session: Session, applied: list[tuple[str, str | bytes]], changes: list[Change]) -> None:
    events, explanations = _event_rows(applied, changes)
    insert_rows(session, AppliedBatch.__table__, events)
    insert_rows(session, ExplanationBatch.__table__, explanations)


def _score_message(row: dict, previous: tuple | None, as_of: str, grades: Sequence[str] = ()) -> bytes:
    message = {
        "region_code": row["region_code"], "level": row["level"], "league": row["league"], "year": row["year"],
        "total": row["total"], "grade": row["grade"], "gated": row["gated"],
        "components": orjson.Fragment(row["components"]),  # JSON already
        "previous_total": previous[0] if previous else None,
        "previous_grade": previous[1] if previous else None,
        "policy_version": row["policy_id"], "cause": row["cause"], "as_of": as_of,
    }
    # only when the grade changed (rare): a key in every message cost the worker's 1,000,000-event
    # rebuild 13 MB of peak RSS (295 → 308 MB, three runs each), the longer messages, we think,
    # crossing pymalloc's 512-byte limit into malloc's heap
    if (direction := _direction(row, previous, grades)) is not None:
        message["direction"] = direction
    return orjson.dumps(message)


def _direction(row: dict, previous: tuple | None, grades: Sequence[str]) -> str | None:
    """`up` or `down` when the grade changed: better or worse in the policy's order of grades (best
    first), which the total alone does not say (a gate lifted raises the grade while new findings
    lower the total); by the total for a grade the policy does not name (one of an older policy)."""
    if previous is None or previous[1] == row["grade"]:
        return None
    if previous[1] in grades and row["grade"] in grades:
        return "up" if grades.index(row["grade"]) < grades.index(previous[1]) else "down"
    return "up" if row["total"] > previous[0] else "down"


def _team_point_rows(scorer: Scorer, pairs: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """What each team earned in each (team, county) of `pairs` (a team's points are summed when read)."""
    return [_team_point_row(scorer, team, county, *scorer.team_points(team, county)) for team, county in sorted(pairs)]


def _all_team_point_rows(scorer: Scorer) -> Iterator[dict[str, Any]]:
    """`_team_point_rows` of every (team, county) the engine knows, made one by one."""
    for (team, county), (credited, absences) in scorer.all_team_points():
        yield _team_point_row(scorer, team, county, credited, absences)


def _team_point_row(scorer: Scorer, team: str, county: str, credited: int, absences: dict[str, int]) -> dict[str, Any]:
    return {"team_id": team, "region_code": county, "findings_credited": credited,
            "absences": orjson.dumps(absences).decode(), "as_of": scorer.as_of}
