"""The score rows a worker writes, and the score messages it announces, are those of a clean
recomputation, even when an event moves a score without moving any component (a league, a gate,
a first row)."""

import threading
from collections import namedtuple
from datetime import timedelta

import httpx
import orjson
import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from services.events import registry, topics
from services.scoring import store
from services.scoring.base import Outbox
from services.scoring.models import County, ScoreRow, WorkerClock
from services.scoring.policy.model import shipped
from tests.scoring.factories import T0, finding, inspection, record, step

Message = namedtuple("Message", "topic partition offset value headers")


def feed(worker, records) -> None:
    """Each record as one poll of its own, as intake publishes it, at the partition's next offset."""
    for r in records:
        value = registry.encode_record(r.sequence, r.recorded_at, registry.to_json_dict(r.event))
        offset = worker.stored_at.get(0, (0,))[0]
        worker.handle([Message(topics.INTAKE_EVENTS, 0, offset, value, [])])


def rows(db) -> dict[tuple[str, int], tuple]:
    """Every stored score's published fields (not its as-of or cause)."""
    with Session(db) as s:
        return {(r.region_code, r.year): (r.level, r.league, r.total, r.grade, r.gated, orjson.loads(r.components),
                                          r.policy_id) for r in s.execute(select(ScoreRow)).scalars()}


def announced(db) -> dict[tuple[str, int], tuple]:
    """The last score message of every region-year (what ranking and notify hold), as `rows`."""
    with Session(db) as s:
        messages = s.execute(select(Outbox.value).where(Outbox.topic == topics.SCORING_SCORES)
                             .order_by(Outbox.id)).scalars().all()
    last = {}
    for value in messages:
        m = orjson.loads(value)
        last[(m["region_code"], m["year"])] = (m["level"], m["league"], m["total"], m["grade"], m["gated"],
                                               m["components"], m["policy_version"])
    return last


def score_messages(db) -> int:
    with Session(db) as s:
        return s.execute(select(func.count()).select_from(Outbox).where(Outbox.topic == topics.SCORING_SCORES)
                         ).scalar_one()


def recompute(db, *, as_of, now) -> None:
    """Every score recomputed from the applied events (as a policy switch without intake does)."""
    with Session(db) as s:
        store.recompute(s, shipped(), store.counties(s), list(store.stored_records(db)), as_of=as_of, now=now,
                        replace_applied=False, exit_years=store.exit_years(s))
        s.commit()


def assert_as_a_recomputation(db, clock) -> dict[tuple[str, int], tuple]:
    """The stored and announced scores are those a recomputation from the applied events writes:
    one from them changes no row and announces nothing."""
    before, messages = rows(db), score_messages(db)
    assert announced(db) == before
    with Session(db) as s:
        as_of = s.get(WorkerClock, 1).as_of
    recompute(db, as_of=as_of, now=clock.now)
    assert rows(db) == before
    assert score_messages(db) == messages
    return before


def test_a_gate_lifted_by_a_verification_on_time_is_written_and_announced(worker, scoring_db, clock):
    db = scoring_db.engine
    food = finding("F-food", severity="critical", category="assistance_measures", indicator="food")
    feed(worker, [inspection(food, county="513433", households=1000)])
    year = T0.year
    assert rows(db)[("513433", year)][4] is True  # gated
    feed(worker, [step("rectification.reported", "F-food", county="513433", at=T0 + timedelta(days=1)),
                  step("rectification.verified", "F-food", county="513433", at=T0 + timedelta(days=2))])
    scores = assert_as_a_recomputation(db, clock)
    level, league, total, grade, gated, _, _ = scores[("513433", year)]
    assert not gated and total >= 90 and grade == "good"
    # the grade went up with the total unmoved: the message says so (notify's threshold_crossed direction)
    with Session(db) as s:
        last = orjson.loads(s.execute(select(Outbox.value).where(Outbox.topic == topics.SCORING_SCORES,
                                                                  Outbox.key == "513433")
                                      .order_by(Outbox.id.desc())).scalars().first())
    assert (last["previous_grade"], last["grade"], last["direction"]) == ("average", "good", "up")
    assert last["total"] <= last["previous_total"]


def test_a_status_change_moves_the_league_of_its_year_and_of_later_years(worker, scoring_db, clock):
    db = scoring_db.engine
    next_year = T0.replace(year=T0.year + 1)
    feed(worker, [inspection(finding("F-1", severity="minor"), county="513434"),
                  inspection(finding("F-2", severity="minor", deadline=next_year.date() + timedelta(days=9)),
                             county="513434", at=next_year),
                  inspection(county="513431")])  # a prefecture neighbour, in the same league
    assert {k: v[1] for k, v in rows(db).items() if k[0] == "513434"} == {
        ("513434", T0.year): "in_poverty", ("513434", T0.year + 1): "in_poverty"}
    feed(worker, [record("county.status_changed", {"status": "exited", "exit_year": T0.year}, county="513434",
                         at=T0 + timedelta(days=3))])
    scores = assert_as_a_recomputation(db, clock)
    assert scores[("513434", T0.year)][1] == scores[("513434", T0.year + 1)][1] == "exited"
    assert scores[("513431", T0.year)][1] == "in_poverty"


def intake_regions(monkeypatch, regions: list[dict]) -> None:
    """Intake's `GET /v1/regions` answers `regions` (what `Worker.load_counties` reads)."""
    monkeypatch.setattr(httpx, "get", lambda url, **_: httpx.Response(200, json=regions,
                                                                     request=httpx.Request("GET", url)))


def test_a_county_exited_per_the_baseline_is_in_poverty_for_the_years_before_its_exit_year(
        worker, scoring_db, clock, monkeypatch):
    db = scoring_db.engine
    intake_regions(monkeypatch, [{"code": "513435", "parent_code": "513400", "level": "county",
                                  "baseline_status": "exited", "baseline_exit_year": T0.year}])
    worker.load_counties(threading.Event())
    worker.restore()
    last_year = T0.replace(year=T0.year - 1)
    feed(worker, [inspection(finding("F-1", category="stable_exit"), county="513435", at=last_year),
                  inspection(finding("F-2", category="stable_exit"), county="513435")])
    scores = assert_as_a_recomputation(db, clock)
    assert scores[("513435", T0.year - 1)][1:3] == ("in_poverty", 100 - 5.0 * 0.4 / 0.8)
    assert scores[("513435", T0.year)][1:3] == ("exited", 100 - 10.0 * 0.35 / 0.8)


def test_an_exit_year_cached_after_its_county_corrects_the_years_before_it(worker, scoring_db, clock, monkeypatch):
    db = scoring_db.engine
    county, last_year = "513435", T0.year - 1
    with Session(db) as s:  # cached before scoring kept exit years
        store.save_counties(s, [{"code": county, "baseline_status": "exited"}])
        s.commit()
    worker.restore()
    feed(worker, [inspection(county=county, at=T0.replace(year=last_year)), inspection(county=county)])
    assert rows(db)[(county, last_year)][1] == "exited"
    # the next start loads intake's regions again: the year is filled in, the rest of the row kept
    intake_regions(monkeypatch, [{"code": county, "parent_code": "513400", "level": "county",
                                  "baseline_status": "in_poverty", "baseline_exit_year": T0.year}])
    worker.load_counties(threading.Event())
    with Session(db) as s:
        assert (s.get(County, county).status, s.get(County, county).exit_year) == ("exited", T0.year)
    worker.restore()
    worker.tick()  # the first write of a rebuilt engine compares every county-year it owns
    scores = assert_as_a_recomputation(db, clock)  # (written and announced)
    assert (scores[(county, last_year)][1], scores[(county, T0.year)][1]) == ("in_poverty", "exited")


def test_a_clean_visit_and_a_daily_check_with_nothing_failed_give_a_first_score(worker, scoring_db, clock):
    db = scoring_db.engine
    feed(worker, [inspection(county="513431"),
                  record("daily_check.recorded", {"check_id": "D-1", "kind": "registry_accuracy", "items_checked": 20,
                                                  "items_failed": 0}, county="513432")])
    scores = assert_as_a_recomputation(db, clock)
    for county in ("513431", "513432"):
        assert scores[(county, T0.year)][2:4] == (100.0, "good")
    assert scores[("513400", T0.year)][0:4] == ("prefecture", None, 100.0, "good")


@pytest.mark.parametrize("writer", ["thread", "process"], indirect=True)
def test_every_kind_of_history_at_once_with_ticks_between(worker, scoring_db, clock):
    db = scoring_db.engine
    food = finding("F-food", severity="critical", category="assistance_measures", indicator="food",
                   deadline=(T0 + timedelta(days=5)).date())
    feed(worker, [inspection(food, county="513433"), inspection(finding("F-2"), county="513434"),
                  inspection(county="513431")])
    clock.now = T0 + timedelta(days=9)
    worker.tick()  # the food finding is overdue
    feed(worker, [step("rectification.reported", "F-food", county="513433", at=T0 + timedelta(days=9)),
                  record("county.status_changed", {"status": "exited", "exit_year": T0.year}, county="513434",
                         at=T0 + timedelta(days=9)),
                  step("rectification.verified", "F-food", county="513433", at=T0 + timedelta(days=10))])
    clock.now = T0 + timedelta(days=40)
    worker.tick()
    feed(worker, [record("daily_check.recorded", {"check_id": "D-1", "kind": "work_log", "items_checked": 5,
                                                  "items_failed": 0}, county="513432", at=T0 + timedelta(days=40))])
    scores = assert_as_a_recomputation(db, clock)
    assert not scores[("513433", T0.year)][4] and scores[("513434", T0.year)][1] == "exited"
    assert ("513432", T0.year) in scores


def test_a_household_still_flagged_is_carried_into_the_next_year_stored_explained_and_announced(worker, scoring_db,
                                                                                                clock):
    """default-v3: the county's first event of 2027 books the household flagged in 2026, with its own
    line; the clear in 2027 lifts it from 2027 only. Stored, announced and explained as a
    recomputation from the applied events computes them."""
    db = scoring_db.engine
    assert worker.policy.daily_management.return_risk_carries_over
    y27 = T0.replace(year=2027)
    feed(worker, [record("return_risk.flagged", {"household_id": "H-7", "reasons": ["illness"]}, county="513432"),
                  record("daily_check.recorded", {"check_id": "D-27", "kind": "work_log", "items_checked": 5,
                                                  "items_failed": 0}, county="513432", at=y27)])
    scores = rows(db)
    assert announced(db) == scores
    assert [scores[("513432", y)][5]["daily_management"] for y in (2026, 2027)] == [98.0, 98.0]
    with Session(db) as s:
        lines = list(store.explanation_lines(s, "513432", 2027))
    assert [(line.rule, line.points) for _, _, _, line in lines] == [("daily_management.return_risk_carried", -2.0)]
    feed(worker, [record("return_risk.cleared", {"household_id": "H-7"}, county="513432",
                         at=y27 + timedelta(days=3))])
    scores = assert_as_a_recomputation(db, clock)
    assert [scores[("513432", y)][5]["daily_management"] for y in (2026, 2027)] == [98.0, 100.0]


def test_a_rescore_writes_and_announces_every_row_a_chunk_at_a_time(worker, scoring_db, clock, monkeypatch):
    """A recomputation writes its score rows (every county-year of a national store) a chunk at a
    time, with their messages: what it writes, deletes and announces does not depend on the chunk."""
    db = scoring_db.engine
    feed(worker, [inspection(finding("F-1"), county=c) for c in ("513431", "513432", "513433", "513434")]
             + [record("daily_check.recorded", {"check_id": "D-27", "kind": "work_log", "items_checked": 5,
                                                "items_failed": 1}, county="513431", at=T0.replace(year=2027))])
    stored = rows(db)
    assert len([k for k in stored if stored[k][0] == "county"]) == 5  # more than one chunk of 2
    with Session(db) as s:  # every row gone (and one no event supports), as before a first rebuild
        s.execute(ScoreRow.__table__.delete())
        s.execute(ScoreRow.__table__.insert().values(
            region_code="513435", year=2026, level="county", parent_code="513400", league="in_poverty", total=1.0,
            grade="poor", gated=False, policy_id="default-v3", cause="x", as_of=T0,
            components='{"daily_management": 1.0, "inspections": 1.0, "rectification": 1.0, "year_end": null}'))
        s.commit()
    messages = score_messages(db)
    monkeypatch.setattr(store, "SCORE_CHUNK", 2)
    recompute(db, as_of=clock.now, now=clock.now)
    assert rows(db) == stored  # the unsupported row deleted, and not counted in its prefecture (513400)
    assert score_messages(db) == messages + len(stored)  # each row announced once, prefectures included
    assert announced(db) == stored  # (the deleted row is not announced)


# ---- a writer keeps the rows it wrote (store.Stored) ------------------------------------------------

def written(db, scorer, stored, records, *, commit=True, fence=None) -> store.Prepared:
    """`records` applied to `scorer` and persisted through the writer's `stored`, as one batch
    (read from partition 0, at offsets from 0 on)."""
    batch = store.Batch()
    for offset, r in enumerate(records):
        batch.changes += scorer.apply_new(r) or []
        raw = registry.encode_record(r.sequence, r.recorded_at, registry.to_json_dict(r.event))
        batch.applied.append((r.event.region_code, raw))
        batch.offsets[(topics.INTAKE_EVENTS, 0)] = (offset + 1, str(r.event.event_id), None)
    prepared = store.prepare(scorer, batch, now=T0, fence=fence)
    persisted(db, prepared, stored, commit=commit)
    return prepared


def persisted(db, prepared, stored, *, commit=True) -> None:
    with Session(db) as s:
        store.persist(s, prepared, stored)
        if not commit:  # (what a write that fails before its commit leaves)
            s.rollback()
            return
        s.commit()
    stored.committed()


@pytest.mark.parametrize("seed", [1, 2])
def test_writers_sharing_prefectures_each_see_the_others_rows(scoring_db, seed):
    """Two writers whose workers own different counties of one prefecture (scale-out), writing in
    turns at random: each notices the other wrote and reads the rows again, so every prefecture
    is aggregated from both workers' counties and each county row compared with what is stored."""
    import random

    from services.scoring.engine.engine import Engine as Scorer

    rng = random.Random(seed)
    policy = shipped()
    counties = ("513431", "513432")
    writers = [(Scorer(policy, {c: "in_poverty" for c in counties}, T0), store.Stored()) for _ in counties]
    for n in range(16):
        i = rng.randrange(2)
        scorer, stored = writers[i]
        written(scoring_db.engine, scorer, stored, [inspection(
            finding(f"F-{n}", severity=rng.choice(["minor", "major", "critical"])), county=counties[i],
            at=T0 + timedelta(minutes=n))])
        scores = rows(scoring_db.engine)
        mine = [scores[(c, T0.year)][2] for c in counties if (c, T0.year) in scores]
        assert scores[("513400", T0.year)][2] == round(sum(mine) / len(mine), 4), f"write {n}"
    assert announced(scoring_db.engine) == rows(scoring_db.engine)


@pytest.mark.parametrize("keep", [1, store.KEEP_YEARS])
def test_a_writer_keeps_the_latest_years_only_and_reads_a_dropped_year_again(scoring_db, keep):
    """Written: a county in 2022, then in each later year to 2026, then its prefecture's other
    county in 2022. After each commit the writer holds at most `keep` years, the latest; the last
    write reads 2022 again, so the prefecture's 2022 row is the mean of both counties' (from only
    the written county's if the dropped year's rows went but the year still counted as held)."""
    from services.scoring.engine.engine import Engine as Scorer

    counties = ("513431", "513432")
    scorer, stored = Scorer(shipped(), {c: "in_poverty" for c in counties}, T0), store.Stored(keep_years=keep)
    years = range(2022, 2027)
    writes = [(counties[0], year) for year in years] + [(counties[1], 2022)]
    for n, (county, year) in enumerate(writes):
        at = T0.replace(year=year)
        findings = [finding(f"F-{n}-{i}", severity="major") for i in range(1 + (county == counties[1]))]
        written(scoring_db.engine, scorer, stored, [inspection(*findings, county=county, at=at)])
        latest = sorted(stored.years)[-keep:]
        assert sorted(stored.years) == latest and len(stored.years) <= keep, f"write {n}"
        assert {y for _, y in stored.rows} <= set(latest) and {y for _, y in stored.counties} <= set(latest)
    scores = rows(scoring_db.engine)
    both = [scores[(c, 2022)][2] for c in counties]
    assert both[0] != both[1]  # (two findings against one: the mean is neither)
    assert scores[("513400", 2022)][2] == round(sum(both) / 2, 4)
    assert announced(scoring_db.engine) == scores


def test_a_write_rolled_back_is_not_kept_and_written_again_in_full(scoring_db):
    """A write that did not commit (the database went away before its commit): the writer does not
    trust what it held, so the same batch written again compares with what is stored, and writes
    and announces its rows."""
    from services.scoring.engine.engine import Engine as Scorer

    scorer, stored = Scorer(shipped(), {"513431": "in_poverty"}, T0), store.Stored()
    written(scoring_db.engine, scorer, stored, [inspection(finding("F-1"))])
    first = rows(scoring_db.engine)[("513431", T0.year)][2]
    lost = written(scoring_db.engine, scorer, stored, [inspection(finding("F-2", severity="critical"))], commit=False)
    assert stored.count is None and rows(scoring_db.engine)[("513431", T0.year)][2] == first
    persisted(scoring_db.engine, lost, stored)  # as the worker writes an unwritten batch again
    scores = rows(scoring_db.engine)
    assert scores[("513431", T0.year)][2] < first and announced(scoring_db.engine) == scores
    recompute(scoring_db.engine, as_of=T0, now=T0)  # changes nothing
    assert rows(scoring_db.engine) == scores


def test_a_writer_whose_partition_another_worker_claimed_since_its_last_write_is_stale(scoring_db):
    """The partition owners a writer holds are read again once another worker's claim moved the
    count: its next write is fenced off."""
    from services.scoring.engine.engine import Engine as Scorer

    def claim(owner):
        with Session(scoring_db.engine) as s:
            store.claim(s, topics.INTAKE_EVENTS, [0], owner)
            s.commit()

    scorer, stored = Scorer(shipped(), {"513431": "in_poverty"}, T0), store.Stored()
    claim("a")
    fence = store.Fence(0, "a", frozenset({0}))
    written(scoring_db.engine, scorer, stored, [inspection(finding("F-1"))], fence=fence)
    claim("b")
    with pytest.raises(store.Stale, match=r"partitions \[0\] were claimed"):
        written(scoring_db.engine, scorer, stored, [inspection(finding("F-2"))], fence=fence)
