"""Properties of the engine over random event histories (hypothesis)."""

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from services.events.registry import Recorded
from services.events.vocabulary import FindingCategory, Indicator, Severity
from services.scoring import store
from services.scoring.engine.engine import COMPONENTS, DEDUCTED, Engine
from services.scoring.policy.model import shipped
from tests.scoring.factories import T0, finding, inspection, record, step

# every property holds under each shipped policy (their rules differ: villages in the sample, a
# dispute's lateness frozen or not, return-risk flags carried into the years they stay open)
POLICIES = [shipped("default-v1"), shipped("default-v2"), shipped("default-v3")]
EACH_POLICY = pytest.mark.parametrize("policy", POLICIES, ids=[p.id for p in POLICIES])
COUNTIES = ["513431", "513432", "510722"]
STATUSES = {"513431": "in_poverty", "513432": "exited", "510722": "in_poverty"}
NEXT = {  # allowed ledger moves from each state (as intake enforces them)
    "open": ["rectification.reported", "finding.disputed"],
    "reported": ["rectification.verified", "rectification.rejected"],
    "disputed": ["finding.upheld", "finding.withdrawn"],
    "verified": [], "withdrawn": [],
}
TO = {"rectification.reported": "reported", "rectification.verified": "verified", "rectification.rejected": "open",
      "finding.disputed": "disputed", "finding.upheld": "open", "finding.withdrawn": "withdrawn"}


@st.composite
def histories(draw, max_steps=40):
    """(records, clock ticks): a valid history over ~two years, and times the clock advanced to.

    Finding and household ids are numbered per county, as partners choose them (unique within a
    county only): the counties' F0, F1, … are the same ids."""
    at = T0
    findings: dict[tuple[str, str], tuple[str, bool]] = {}  # (county, id) → (state, decided)
    numbered: dict[str, int] = {}  # county → findings recorded
    flagged: set[tuple[str, str]] = set()
    status = dict(STATUSES)
    records, ticks = [], []
    for i in range(draw(st.integers(1, max_steps))):
        at += timedelta(hours=draw(st.integers(1, 24 * 20)))
        county = draw(st.sampled_from(COUNTIES))
        kind = draw(st.sampled_from(["inspection", "step", "step", "daily", "year_end", "status", "risk",
                                     "absence", "tick"]))
        if kind == "inspection":
            fs = [finding(f"F{numbered.get(county, 0) + j}", severity=draw(st.sampled_from(list(Severity))).value,
                          category=draw(st.sampled_from(list(FindingCategory))).value,
                          indicator=draw(st.sampled_from(list(Indicator))).value,
                          deadline=(at + timedelta(days=draw(st.integers(0, 60)))).date() + timedelta(days=1))
                  for j in range(draw(st.integers(0, 3)))]
            # any sample a stored record may hold (intake's checks of villages against households
            # are for new events): villages count under a policy's households_per_village
            records.append(inspection(*fs, county=county, at=at, households=draw(st.integers(0, 300)),
                                      villages=draw(st.integers(0, 20)), team=draw(st.sampled_from(["t1", "t2"]))))
            numbered[county] = numbered.get(county, 0) + len(fs)
            for f in fs:
                findings[(county, f["finding_id"])] = ("open", False)
        elif kind == "step":
            movable = [(c, fid, s, d) for (c, fid), (s, d) in sorted(findings.items()) if NEXT[s]]
            if not movable:
                continue
            c, fid, s, decided = draw(st.sampled_from(movable))
            moves = [m for m in NEXT[s] if not (m == "finding.disputed" and decided)]
            if not moves:
                continue
            move = draw(st.sampled_from(moves))
            records.append(step(move, fid, county=c, at=at))
            findings[(c, fid)] = (TO[move], decided or move == "finding.upheld")
        elif kind == "daily":
            checked = draw(st.integers(1, 50))
            records.append(record("daily_check.recorded", {"check_id": f"D{i}", "kind": draw(st.sampled_from(
                ["registry_accuracy", "team_presence", "work_log"])), "items_checked": checked,
                "items_failed": draw(st.integers(0, checked))}, county=county, at=at))
        elif kind == "year_end":
            records.append(record("year_end_assessment.recorded", {"year": at.year, "score": draw(
                st.floats(0, 100, allow_nan=False))}, county=county, at=at))
        elif kind == "status":
            new = "exited" if status[county] == "in_poverty" else "in_poverty"
            records.append(record("county.status_changed", {"status": new, "exit_year": at.year if new == "exited"
                                                            else None}, county=county, at=at))
            status[county] = new
        elif kind == "risk":
            household = f"H{draw(st.integers(0, 3))}"
            if (county, household) in flagged:
                records.append(record("return_risk.cleared", {"household_id": household}, county=county, at=at))
                flagged.discard((county, household))
            else:
                records.append(record("return_risk.flagged", {"household_id": household, "reasons": ["r"]},
                                      county=county, at=at))
                flagged.add((county, household))
        elif kind == "absence":
            absence = {"team_id": "t1", "inspector_id": "i1", "approved": draw(st.booleans())}
            records.append(record("inspector.absence_recorded", absence, county=county, at=at))
        else:
            ticks.append((len(records), at))
    end = at + timedelta(days=draw(st.integers(0, 120)))
    return records, ticks, end


def everything(engine: Engine) -> dict:
    scores = {key: engine.score(*key) for key in sorted(engine.years)}
    return {"scores": scores, "teams": [engine.inspector_points(t) for t in ("t1", "t2")]}


def run(records, ticks, end, policy):
    engine = Engine(policy, STATUSES, start=T0)
    changes = []
    tick_at = dict(ticks)
    for i, r in enumerate(records):
        if i in tick_at:
            changes += engine.advance(tick_at[i])
        changes += engine.apply(r)
    changes += engine.advance(end)
    return engine, changes


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@EACH_POLICY
@PROPERTY
@given(history=histories())
def test_incremental_equals_full_recomputation(policy, history):
    records, ticks, end = history
    incremental, _ = run(records, ticks, end, policy)
    full, _ = run(records, [], end, policy)  # every event first, then one clock advance
    assert everything(incremental) == everything(full)
    # and what a worker's restore does: a new engine at today's clock, every stored event applied
    restored = Engine(policy, STATUSES, start=end)
    for r in records:
        restored.apply(r)
    assert everything(restored) == everything(incremental)


@PROPERTY
@given(data=st.data())
def test_a_flag_costs_every_year_from_its_own_to_the_one_it_was_cleared_in(data):
    """default-v3, flags and clears in any order of time (entered late or early), with other events
    beginning years at random: every county-year holds the households whose flag covers it, worked
    out from the flags alone, and its daily management costs them at its league's rate."""
    policy = shipped("default-v3")
    engine = Engine(policy, STATUSES, start=T0)
    open_flags: dict[tuple[str, str], int] = {}  # (county, household) → year flagged
    spans: list[tuple[str, str, int, int]] = []  # (county, household, from, to): the years [from, to)
    for i in range(data.draw(st.integers(1, 60))):
        county, household = data.draw(st.sampled_from(COUNTIES[:2])), f"H{data.draw(st.integers(0, 2))}"
        year = data.draw(st.integers(2025, 2028))
        at = T0.replace(year=year) + timedelta(hours=i)
        kind = data.draw(st.sampled_from(["risk", "daily"]))
        if kind == "daily":
            engine.apply(record("daily_check.recorded", {"check_id": f"D{i}", "kind": "work_log", "items_checked": 1,
                                                         "items_failed": 0}, county=county, at=at))
        elif (county, household) in open_flags:
            engine.apply(record("return_risk.cleared", {"household_id": household}, county=county, at=at))
            flagged_in = open_flags.pop((county, household))
            spans.append((county, household, flagged_in, max(year, flagged_in)))
        else:
            engine.apply(record("return_risk.flagged", {"household_id": household, "reasons": ["r"]},
                                county=county, at=at))
            open_flags[(county, household)] = year
    for (county, year), cy in engine.years.items():
        expected = {h for (c, h), y in open_flags.items() if c == county and y <= year}
        expected |= {h for c, h, a, b in spans if c == county and a <= year < b}
        assert cy.flagged == expected, (county, year)
        rate = policy.daily_management.return_risk_alert[engine.league(county, year)]
        assert engine.score(county, year).components["daily_management"] == pytest.approx(100 - rate * len(expected))


@EACH_POLICY
@PROPERTY
@given(history=histories(), data=st.data())
def test_a_duplicate_changes_nothing(policy, history, data):
    records, ticks, end = history
    assume(records)
    engine, _ = run(records, ticks, end, policy)
    before = everything(engine)
    again = data.draw(st.sampled_from(records))
    assert engine.apply(again) == []
    assert everything(engine) == before


@EACH_POLICY
@PROPERTY
@given(history=histories(), pieces=st.integers(2, 30))
def test_advancing_in_one_step_or_many_is_the_same(policy, history, pieces):
    records, _, end = history
    one, _ = run(records, [], end, policy)
    many = Engine(policy, STATUSES, start=T0)
    for r in records:
        many.apply(r)
    start = T0 + timedelta(days=1)
    for k in range(1, pieces + 1):
        many.advance(start + (end - start) * k / pieces)
    many.advance(end)
    assert everything(one) == everything(many)


@EACH_POLICY
@PROPERTY
@given(history=histories())
def test_scores_stay_within_0_and_100_and_explanations_add_up(policy, history):
    records, ticks, end = history
    engine, changes = run(records, ticks, end, policy)
    for (county, year), s in everything(engine)["scores"].items():
        assert 0 <= s.total <= 100
        for c in COMPONENTS:
            assert s.components[c] is None or 0 <= s.components[c] <= 100
        # every point lost traces back to a change line: the lines add up to the component
        for c in DEDUCTED:
            lines = sum(ch.points for ch in changes if (ch.region_code, ch.year, ch.component) == (county, year, c))
            assert abs((100 - s.components[c]) + lines) < 1e-6, (county, year, c)


@EACH_POLICY
@PROPERTY
@given(history=histories())
def test_team_changes_name_every_pair_whose_points_an_event_moved(policy, history):
    # the worker writes only the (team, county) pairs the engine drains after a batch or a clock
    # move: any pair an event or time moved must be among them, and a pair's points are its
    # county's points of that team
    records, ticks, end = history
    engine = Engine(policy, STATUSES, start=T0)
    tick_at = dict(ticks)

    def points() -> dict:
        return {(team, county): earned for county in engine.counties()
                for team, earned in engine.team_points_in(county).items()}

    def step(change) -> None:
        before = points()
        change()
        after = points()
        moved = {pair for pair in after if after[pair] != before.get(pair)}
        assert moved <= engine.drain_team_changes()
        for (team, county), earned in after.items():
            assert engine.team_points(team, county) == earned

    for i, r in enumerate(records):
        if i in tick_at:
            step(lambda: engine.advance(tick_at[i]))  # time passing a deadline credits a finding
        step(lambda: engine.apply(r))
    step(lambda: engine.advance(end))


def distinct_ids(r: Recorded) -> Recorded:
    """`r` with its finding and household ids made unique across counties (the county prefixed)."""
    event, county = r.event, r.event.region_code
    payload = event.payload
    if hasattr(payload, "findings"):
        findings = [f.model_copy(update={"finding_id": f"{county}-{f.finding_id}"}) for f in payload.findings]
        payload = payload.model_copy(update={"findings": findings})
    elif hasattr(payload, "finding_id"):
        payload = payload.model_copy(update={"finding_id": f"{county}-{payload.finding_id}"})
    elif hasattr(payload, "household_id"):
        payload = payload.model_copy(update={"household_id": f"{county}-{payload.household_id}"})
    return replace(r, event=event.model_copy(update={"payload": payload}))


@EACH_POLICY
@PROPERTY
@given(history=histories())
def test_counties_sharing_an_id_score_as_if_their_ids_differed(policy, history):
    # finding and household ids are unique per county only: each county's events act on its own
    # F0 and H0, so scores, team points and explanations are those of the same history with ids
    # unique across counties
    records, ticks, end = history
    shared, shared_changes = run(records, ticks, end, policy)
    distinct, distinct_changes = run([distinct_ids(r) for r in records], ticks, end, policy)
    assert everything(shared) == everything(distinct)
    assert shared_changes == distinct_changes


@EACH_POLICY
@PROPERTY
@given(history=histories(), data=st.data())
def test_the_rows_written_batch_by_batch_are_a_recomputations(policy, history, data):
    # the worker writes, after each batch or clock move, the rows of the county-years `store.prepare`
    # names (where one differs from what is stored): whatever an event moved, a league or a gate
    # included, the rows so kept must be those a recomputation writes for every county-year
    records, ticks, end = history
    engine = Engine(policy, STATUSES, start=T0)
    stored: dict[tuple[str, int], tuple] = {}
    tick_at = dict(ticks)

    def write(changes) -> None:
        for row in store.prepare(engine, store.Batch(changes=changes), now=end).counties:
            stored[(row["region_code"], row["year"])] = tuple(row[f] for f in store.PUBLISHED)

    i = 0
    while i < len(records):
        if i in tick_at:
            write(engine.advance(tick_at[i]))
        j, last = i + 1, i + data.draw(st.integers(1, 4))  # a poll's events, up to the next tick: one batch
        while j < min(last, len(records)) and j not in tick_at:
            j += 1
        write([change for r in records[i:j] for change in engine.apply(r)])
        i = j
    write(engine.advance(end))
    full, _ = run(records, [], end, policy)
    recomputed = store.prepare(full, store.Batch(rescore_all=True), now=end).counties
    assert stored == {(r["region_code"], r["year"]): tuple(r[f] for f in store.PUBLISHED) for r in recomputed}
