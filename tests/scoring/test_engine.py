"""The pure engine: rules, time, explanations, inspector points."""

from datetime import datetime, timedelta, timezone

import pytest

from services.scoring.engine.engine import Engine
from services.scoring.policy.model import shipped
from tests.scoring.factories import T0, finding, inspection, record, step

POLICY = shipped()
V1, V2, V3 = shipped("default-v1"), shipped("default-v2"), shipped("default-v3")


@pytest.fixture
def engine():
    return Engine(POLICY, {"513431": "in_poverty", "513432": "exited"}, start=T0)


def total_changes(changes, component):
    return round(sum(c.points for c in changes if c.component == component), 6)


def test_a_clean_county_scores_100_and_a_clean_visit_counts(engine):
    engine.apply(inspection())
    s = engine.score("513431", 2026)
    assert s.total == 100 and s.grade == "good" and s.components["year_end"] is None


def test_findings_deduct_by_severity_normalised_by_sample(engine):
    changes = engine.apply(inspection(finding("F1", severity="major")))
    assert engine.score("513431", 2026).components["inspections"] == 100 - 5.0
    assert total_changes(changes, "inspections") == -5.0
    # a second, clean visit of 100 households halves the rate of findings per household
    engine.apply(inspection())
    assert engine.score("513431", 2026).components["inspections"] == 100 - 2.5


def test_small_samples_do_not_amplify_without_bound(engine):
    engine.apply(inspection(finding("F1", severity="minor"), households=10, villages=1))
    assert engine.score("513431", 2026).components["inspections"] == 100 - 2.0 * 100 / 50


@pytest.mark.parametrize("villages, households, v1, v2", [
    (10, 10, 100 / 50, 100 / 100),  # a village visit, one household met in each: v1 floors 10 at 50
    (10, 0, 100 / 50, 100 / 100),  # no household at all (a record stored before intake refused it)
    (3, 20, 100 / 50, 100 / 50),  # 30 household-equivalents: under the floor either way
    (10, 150, 100 / 150, 100 / 150),  # more households than villages x 10: the households count
    (0, 0, 100 / 50, 100 / 50),  # a records check at the county office: the floor
])
def test_a_visits_sample_counts_its_villages_under_v2_and_not_under_v1(villages, households, v1, v2):
    """v2's households_per_village (10): a visit samples max(households, villages x 10); v1 (0): its
    households alone, so a visit about villages was taken up to the 50-household floor."""
    for policy, per_finding in ((V1, v1), (V2, v2)):
        engine = Engine(policy, {"513431": "in_poverty"}, start=T0)
        engine.apply(inspection(finding("F1", severity="major", indicator="road"), households=households,
                                villages=villages))
        assert engine.score("513431", 2026).components["inspections"] == pytest.approx(100 - 5.0 * per_finding), \
            policy.id


def test_villages_add_to_the_years_sample_visit_by_visit():
    """The sample is summed over the county-year visit by visit: each visit's max, not the max of sums."""
    engine = Engine(V2, {"513431": "in_poverty"}, start=T0)
    engine.apply(inspection(finding("F1", severity="major", indicator="road"), households=10, villages=10))  # 100
    engine.apply(inspection(households=40, villages=2))  # 40 (villages x 10 = 20)
    assert engine.score("513431", 2026).components["inspections"] == pytest.approx(100 - 5.0 * 100 / 140)


def test_exited_league_weighs_stable_exit_more(engine):
    engine.apply(inspection(finding("A", category="stable_exit"), county="513431"))
    engine.apply(inspection(finding("B", category="stable_exit"), county="513432"))
    assert engine.score("513431", 2026).components["inspections"] == 95.0
    assert engine.score("513432", 2026).components["inspections"] == 90.0
    assert engine.score("513432", 2026).league == "exited"


def test_withdrawn_finding_restores_the_points(engine):
    engine.apply(inspection(finding("F1", severity="critical")))
    engine.apply(step("finding.disputed", "F1"))
    changes = engine.apply(step("finding.withdrawn", "F1", at=T0 + timedelta(days=2)))
    assert total_changes(changes, "inspections") == 12.0
    assert engine.score("513431", 2026).components["inspections"] == 100


def test_rejection_costs_and_overdue_accrues_with_time_alone(engine):
    deadline = T0.date() + timedelta(days=10)
    engine.apply(inspection(finding("F1", deadline=deadline)))
    engine.apply(step("rectification.reported", "F1"))
    engine.apply(step("rectification.rejected", "F1", at=T0 + timedelta(days=2)))
    assert engine.score("513431", 2026).components["rectification"] == 100 - 4.0
    # the deadline day itself is on time
    assert engine.advance(datetime.combine(deadline, datetime.min.time(), timezone(timedelta(hours=8)))
                          + timedelta(hours=20)) == []
    changes = engine.advance(T0 + timedelta(days=14))  # 4 days late
    assert total_changes(changes, "rectification") == -2.0
    assert all(c.cause == "deadline" and c.rule == "rectification.overdue" for c in changes)
    engine.advance(T0 + timedelta(days=200))
    assert engine.score("513431", 2026).components["rectification"] == 100 - 4.0 - 15.0  # capped per finding


def test_under_v2_a_dispute_freezes_the_overdue_points_accrued_until_it_is_decided():
    """Disputing a finding after its deadline keeps what it owed that day and stops the count;
    upheld, it counts from the deadline again (the dispute's days included); withdrawn, nothing."""
    engine = Engine(V2, {"513431": "in_poverty"}, start=T0)
    deadline = T0.date() + timedelta(days=10)
    engine.apply(inspection(finding("UP", deadline=deadline), finding("OUT", deadline=deadline)))
    engine.advance(T0 + timedelta(days=20))  # 10 days late, each
    assert engine.score("513431", 2026).components["rectification"] == 100 - 2 * 5.0
    assert total_changes(engine.apply(step("finding.disputed", "UP", at=T0 + timedelta(days=20))),
                         "rectification") == 0
    assert total_changes(engine.apply(step("finding.disputed", "OUT", at=T0 + timedelta(days=20))),
                         "rectification") == 0
    assert engine.advance(T0 + timedelta(days=24)) == []  # no accrual while disputed
    assert engine.score("513431", 2026).components["rectification"] == 100 - 2 * 5.0
    changes = engine.apply(step("finding.upheld", "UP", at=T0 + timedelta(days=24)))
    assert total_changes(changes, "rectification") == -2.0  # the 4 days of the dispute
    changes = engine.apply(step("finding.withdrawn", "OUT", at=T0 + timedelta(days=24)))
    assert total_changes(changes, "rectification") == 5.0
    assert engine.score("513431", 2026).components["rectification"] == 100 - 7.0
    # a dispute filed before the deadline owes nothing while it lasts, however long
    engine.apply(inspection(finding("EARLY", deadline=T0.date() + timedelta(days=40)), at=T0 + timedelta(days=24)))
    engine.apply(step("finding.disputed", "EARLY", at=T0 + timedelta(days=30)))
    engine.advance(T0 + timedelta(days=90))
    assert engine.score("513431", 2026).components["rectification"] == 100 - 15.0  # UP alone, at its cap


def test_under_v1_a_finding_in_dispute_owes_no_lateness_until_decided():
    """default-v1 (dispute_freezes_overdue = false), as before the freeze: a dispute filed after the
    deadline gives back the lateness accrued; upheld, it counts from the deadline (the dispute's days
    included); withdrawn, nothing."""
    engine = Engine(V1, {"513431": "in_poverty"}, start=T0)
    deadline = T0.date() + timedelta(days=10)
    engine.apply(inspection(finding("UP", deadline=deadline), finding("OUT", deadline=deadline)))
    engine.advance(T0 + timedelta(days=20))  # 10 days late, each
    assert engine.score("513431", 2026).components["rectification"] == 100 - 2 * 5.0
    changes = engine.apply(step("finding.disputed", "UP", at=T0 + timedelta(days=20)))
    assert total_changes(changes, "rectification") == 5.0
    assert {c.rule for c in changes if c.component == "rectification"} == {"finding.disputed"}
    assert total_changes(engine.apply(step("finding.disputed", "OUT", at=T0 + timedelta(days=20))),
                         "rectification") == 5.0
    assert engine.advance(T0 + timedelta(days=24)) == []  # no accrual while disputed
    assert engine.score("513431", 2026).components["rectification"] == 100.0
    changes = engine.apply(step("finding.upheld", "UP", at=T0 + timedelta(days=24)))
    assert total_changes(changes, "rectification") == -7.0  # 14 days from its deadline
    changes = engine.apply(step("finding.withdrawn", "OUT", at=T0 + timedelta(days=24)))
    assert total_changes(changes, "rectification") == 0.0
    assert engine.score("513431", 2026).components["rectification"] == 100 - 7.0


def worked_history() -> tuple[list, list]:
    """Two visits (one about villages), a daily check and a dispute filed after a deadline; then the
    dispute upheld and a year-end result."""
    before = [
        # 10 villages, one household in each; a major road finding (5 points, basic_work x 1.0)
        inspection(finding("F1", severity="major", indicator="road", deadline=T0.date() + timedelta(days=10)),
                   households=10, villages=10),
        # 40 households in 5 villages; a minor finding on policy implementation (2 x 1.2)
        inspection(finding("F2", severity="minor", category="policy_implementation",
                           deadline=T0.date() + timedelta(days=20)), households=40, villages=5,
                   at=T0 + timedelta(days=1)),
        record("daily_check.recorded", {"check_id": "D1", "kind": "registry_accuracy", "items_checked": 20,
                                        "items_failed": 4}, at=T0 + timedelta(days=2)),  # 4 x 0.5 x 1.0
        step("finding.disputed", "F1", at=T0 + timedelta(days=15)),  # 5 days after its deadline
    ]
    after = [
        step("finding.upheld", "F1", at=T0 + timedelta(days=30)),  # 20 days after its deadline
        record("year_end_assessment.recorded", {"year": 2026, "score": 80.0}, at=T0 + timedelta(days=30)),
    ]
    return before, after


@pytest.mark.parametrize("policy, inspections, disputed, before_total, after_total", [
    # v1, by hand, as before the freeze (1f0289d): the sample is 10 + 40 households, at the floor of 50:
    # (5 + 2.4) x 100 / 50 = 14.8 lost; in dispute F1 owes nothing, F2 owes 10 days x 0.5 = 5.0;
    # total (0.2 x 98 + 0.4 x 85.2 + 0.2 x 95) / 0.8 = 90.85 (no year-end yet: weights renormalised)
    (V1, 85.2, 95.0, 90.85, 86.68),
    # v2: the sample is max(10, 10 x 10) + max(40, 5 x 10) = 150: 7.4 x 100 / 150 = 4.9333 lost; F1
    # frozen at 5 days x 0.5 = 2.5, with F2's 5.0: 7.5; total (19.6 + 0.4 x 95.0667 + 0.2 x 92.5) / 0.8
    (V2, 100 - 7.4 * 100 / 150, 92.5, 95.1583, 90.6267),
], ids=["default-v1", "default-v2"])
def test_a_worked_history_scores_as_worked_out_by_hand(policy, inspections, disputed, before_total, after_total):
    """Every number of a small history worked out by hand under each shipped policy: default-v1 still
    computes what it computed before the dispute freeze, default-v2 differs by its two rules only."""
    before, after = worked_history()
    engine = Engine(policy, {"513431": "in_poverty"}, start=T0)
    for r in before:
        engine.apply(r)
    engine.advance(T0 + timedelta(days=30))
    s = engine.score("513431", 2026)
    assert s.components == {"daily_management": 98.0, "inspections": pytest.approx(inspections),
                            "rectification": disputed, "year_end": None}
    assert s.total == before_total and s.grade == "good"
    for r in after:
        engine.apply(r)
    # upheld: F1 owes 20 days x 0.5 = 10 under either policy; with F2's 5.0, rectification is 85;
    # the total 0.2 x 98 + 0.4 x inspections + 0.2 x 85 + 0.2 x 80
    s = engine.score("513431", 2026)
    assert s.components["rectification"] == 85.0
    assert s.total == after_total and s.grade == ("fairly_good" if policy is V1 else "good")


def test_a_finding_recorded_after_its_deadline_is_booked_as_overdue(engine):
    """An inspection entered late, its finding's deadline already past on the engine's clock: the
    inspection's lines are its findings, the lateness is an overdue line (cause: the inspection)."""
    engine.advance(T0 + timedelta(days=14))
    event = inspection(finding("F1", severity="major", deadline=T0.date() + timedelta(days=10)))
    changes = engine.apply(event)
    assert {(c.component, c.rule) for c in changes} == {("inspections", "inspections.findings"),
                                                         ("rectification", "rectification.overdue")}
    assert total_changes(changes, "rectification") == -2.0  # 4 days late
    assert {c.cause for c in changes} == {str(event.event.event_id)}


def test_late_verification_stops_the_clock_where_it_happened(engine):
    deadline = T0.date() + timedelta(days=10)
    engine.apply(inspection(finding("F1", deadline=deadline)))
    engine.advance(T0 + timedelta(days=20))
    assert engine.score("513431", 2026).components["rectification"] == 100 - 10 * 0.5
    # the verification happened on day 12, but arrives now: only 2 days were overdue
    changes = engine.apply(step("rectification.verified", "F1", at=T0 + timedelta(days=12)))
    assert total_changes(changes, "rectification") == 4.0
    assert engine.score("513431", 2026).components["rectification"] == 99.0


def test_daily_checks_and_return_risk(engine):
    engine.apply(record("daily_check.recorded", {"check_id": "D1", "kind": "team_presence", "items_checked": 10,
                                                 "items_failed": 3}))
    assert engine.score("513431", 2026).components["daily_management"] == 100 - 3 * 2.0 * 0.5
    engine.apply(record("return_risk.flagged", {"household_id": "H1", "reasons": ["illness"]}))
    assert engine.score("513431", 2026).components["daily_management"] == 97 - 2.0
    engine.apply(record("return_risk.cleared", {"household_id": "H1", "reasons": []}))
    assert engine.score("513431", 2026).components["daily_management"] == 97


Y27, Y28 = datetime(2027, 2, 1, 1, tzinfo=timezone.utc), datetime(2028, 2, 1, 1, tzinfo=timezone.utc)


def daily(at: datetime, failed: int = 0, county: str = "513431"):
    return record("daily_check.recorded", {"check_id": f"D{at:%Y%m%d}", "kind": "work_log", "items_checked": 5,
                                           "items_failed": failed}, county=county, at=at)


def flag(at: datetime, household: str = "H1", county: str = "513431"):
    return record("return_risk.flagged", {"household_id": household, "reasons": ["illness"]}, county=county, at=at)


def clear(at: datetime, household: str = "H1", county: str = "513431"):
    return record("return_risk.cleared", {"household_id": household}, county=county, at=at)


def daily_management(engine: Engine, year: int, county: str = "513431") -> float:
    return engine.score(county, year).components["daily_management"]


@pytest.mark.parametrize("policy, costs_2027", [(V1, False), (V2, False), (V3, True)],
                         ids=["default-v1", "default-v2", "default-v3"])
def test_a_household_still_flagged_costs_the_next_year_under_v3(policy, costs_2027):
    """default-v3 carries a flag into each year its county begins while the household is flagged,
    booked with that year's first event and explained by its own line; v1 and v2 charge the
    flag's year only."""
    engine = Engine(policy, {"513431": "in_poverty", "513432": "exited"}, start=T0)
    engine.apply(flag(T0))
    first = engine.apply(daily(Y27, failed=2))  # the county's first event of 2027
    assert daily_management(engine, 2026) == 100 - 2.0
    assert daily_management(engine, 2027) == 100 - 2 * 0.5 * 0.5 - (2.0 if costs_2027 else 0)
    carried = [c for c in first if c.rule == "daily_management.return_risk_carried"]
    assert [(c.year, c.points) for c in carried] == ([(2027, -2.0)] if costs_2027 else [])
    assert all(c.cause == first[-1].cause for c in carried)  # the event that began the year
    # cleared in 2027: 2027 is lifted, 2026 (flagged all its end) keeps it
    engine.apply(clear(Y27 + timedelta(days=30)))
    assert (daily_management(engine, 2026), daily_management(engine, 2027)) == (98.0, 99.5)
    # a later year begins: nothing carried any more
    engine.apply(daily(Y28))
    assert daily_management(engine, 2028) == 100.0


def test_a_carried_flag_costs_each_year_at_its_leagues_rate_and_a_late_flag_reaches_back():
    engine = Engine(V3, {"513432": "exited"}, start=T0)
    for at in (T0, Y27, Y28):
        engine.apply(daily(at, county="513432"))
    # entered late: flagged in 2026, arriving once 2027 and 2028 have begun: all three years
    changes = engine.apply(flag(T0 + timedelta(days=5), county="513432"))
    assert sorted((c.year, c.points) for c in changes) == [(2026, -5.0), (2027, -5.0), (2028, -5.0)]
    # cleared (late too) in 2027: 2027 and 2028 are lifted, in one event
    changes = engine.apply(clear(Y27 + timedelta(days=3), county="513432"))
    assert sorted((c.year, c.points) for c in changes) == [(2027, 5.0), (2028, 5.0)]
    assert [daily_management(engine, y, "513432") for y in (2026, 2027, 2028)] == [95.0, 100.0, 100.0]
    # flagged again in 2028 (the same household): 2028 only, once
    engine.apply(flag(Y28 + timedelta(days=1), county="513432"))
    assert [daily_management(engine, y, "513432") for y in (2026, 2027, 2028)] == [95.0, 100.0, 95.0]


def test_a_year_begun_after_a_flag_was_cleared_is_booked_for_the_years_it_was_open():
    # a 2027 event arriving after the household (flagged 2026) was cleared in 2028: 2027 began
    # with the household flagged, as an engine kept current from the start would have booked it
    engine = Engine(V3, {"513431": "in_poverty"}, start=T0)
    engine.apply(flag(T0))
    engine.apply(clear(Y28))
    engine.apply(daily(Y27))
    engine.apply(daily(Y28 + timedelta(days=1)))
    assert [daily_management(engine, y) for y in (2026, 2027, 2028)] == [98.0, 98.0, 100.0]


def test_year_end_joins_the_total_and_a_correction_replaces_it(engine):
    engine.apply(inspection(finding("F1", severity="critical", indicator="road")))  # inspections 88
    assert engine.score("513431", 2026).total == pytest.approx((0.2 * 100 + 0.4 * 88 + 0.2 * 100) / 0.8)
    engine.apply(record("year_end_assessment.recorded", {"year": 2026, "score": 70}))
    assert engine.score("513431", 2026).total == pytest.approx(0.2 * 100 + 0.4 * 88 + 0.2 * 100 + 0.2 * 70)
    engine.apply(record("year_end_assessment.recorded", {"year": 2026, "score": 80}))
    assert engine.score("513431", 2026).components["year_end"] == 80


def test_open_critical_finding_on_two_assurances_caps_the_grade(engine):
    engine.apply(inspection(finding("F1", severity="critical", indicator="housing"), households=1000))
    s = engine.score("513431", 2026)
    assert s.total > 90 and s.grade == "average" and s.gated
    engine.apply(step("rectification.reported", "F1"))
    engine.apply(step("rectification.verified", "F1", at=T0 + timedelta(days=3)))
    assert engine.score("513431", 2026).grade == "good"


def test_exit_moves_the_league_from_the_status_change(engine):
    engine.apply(inspection(finding("F1", category="stable_exit")))
    changes = engine.apply(record("county.status_changed", {"status": "exited", "exit_year": 2026},
                                  at=T0 + timedelta(days=5)))
    assert engine.score("513431", 2026).league == "exited"
    assert engine.score("513431", 2025).league == "in_poverty"
    assert total_changes(changes, "inspections") == -5.0 and changes[0].rule == "league.exited"


def test_a_baseline_exit_counts_from_its_exit_year_on():
    engine = Engine(POLICY, {"513432": "exited", "513433": "exited"}, start=T0, exit_years={"513432": 2026})
    last_year = T0.replace(year=2025)
    for county in ("513432", "513433"):
        engine.apply(inspection(finding("F1", category="stable_exit"), county=county, at=last_year))
        engine.apply(inspection(finding("F2", category="stable_exit"), county=county))
    # exited in 2026 per the baseline: in poverty for 2025, exited from 2026 on
    assert engine.score("513432", 2025).league == "in_poverty"
    assert engine.score("513432", 2025).components["inspections"] == 95.0  # stable_exit counts single
    assert engine.score("513432", 2026).league == "exited"
    assert engine.score("513432", 2026).components["inspections"] == 90.0
    assert engine.league("513432", 2027) == "exited"
    # no exit year known: exited in every year, as the baseline says
    assert engine.score("513433", 2025).league == engine.score("513433", 2026).league == "exited"


def test_status_changes_override_a_baseline_exit_year():
    engine = Engine(POLICY, {"513432": "exited"}, start=T0, exit_years={"513432": 2026})
    engine.apply(inspection(county="513432", at=T0.replace(year=2024)))
    engine.apply(inspection(county="513432", at=T0.replace(year=2025)))
    engine.apply(inspection(county="513432"))
    # an exit recorded in 2024 (earlier than the baseline's year) moves 2024 and 2025 too
    engine.apply(record("county.status_changed", {"status": "exited", "exit_year": 2024}, county="513432",
                        at=T0.replace(year=2024)))
    assert [engine.score("513432", y).league for y in (2024, 2025, 2026)] == ["exited"] * 3
    # and a return to poverty in 2026 makes 2026 in_poverty again, the years before it kept
    engine.apply(record("county.status_changed", {"status": "in_poverty", "exit_year": None}, county="513432",
                        at=T0 + timedelta(days=5)))
    assert [engine.score("513432", y).league for y in (2024, 2025, 2026)] == ["exited", "exited", "in_poverty"]


def test_duplicate_event_changes_nothing(engine):
    r = inspection(finding("F1"))
    assert engine.apply(r)
    before = engine.score("513431", 2026)
    assert engine.apply(r) == []
    assert engine.score("513431", 2026) == before


def test_inspector_points(engine):
    deadline = T0.date() + timedelta(days=10)
    engine.apply(inspection(finding("A", deadline=deadline), finding("B", deadline=deadline),
                            finding("C", deadline=deadline), finding("D", deadline=deadline), team="t7"))
    engine.apply(step("finding.disputed", "B"))
    engine.apply(step("finding.upheld", "B", at=T0 + timedelta(days=2)))
    engine.apply(step("finding.disputed", "C"))
    engine.apply(step("finding.withdrawn", "C", at=T0 + timedelta(days=2)))
    engine.apply(step("finding.disputed", "D"))  # still pending
    engine.apply(record("inspector.absence_recorded", {"team_id": "t7", "inspector_id": "i1", "approved": False}))
    engine.apply(record("inspector.absence_recorded", {"team_id": "t7", "inspector_id": "i2", "approved": True}))
    assert engine.inspector_points("t7")["points"] == 1 - 2  # B upheld; A not yet past its deadline
    engine.advance(T0 + timedelta(days=12))
    points = engine.inspector_points("t7")
    assert points["points"] == 2 - 2 and points["findings_credited"] == 2
    assert points["inspectors"] == {"i1": {"points": -2, "unapproved_absences": 1}}


@pytest.mark.parametrize("ids", [("F-0001", "F-0001"), ("F-0001", "F-0002")], ids=["shared", "distinct"])
def test_each_county_acts_on_its_own_finding_of_a_shared_id(engine, ids):
    # finding and household ids are unique per county: 513432's F-0001 is not 513431's
    a, b = ids
    deadline = T0.date() + timedelta(days=5)
    engine.apply(inspection(finding(a, severity="critical", indicator="housing", deadline=deadline), county="513431"))
    engine.apply(inspection(finding(b, severity="minor", deadline=deadline), county="513432", team="team-2"))
    engine.apply(step("finding.disputed", a, county="513431"))
    engine.apply(step("finding.withdrawn", a, county="513431", at=T0 + timedelta(days=2)))
    engine.apply(step("rectification.reported", b, county="513432"))
    engine.apply(step("rectification.rejected", b, county="513432", at=T0 + timedelta(days=2)))
    engine.apply(record("return_risk.flagged", {"household_id": "H-1", "reasons": ["r"]}, county="513431"))
    engine.apply(record("return_risk.flagged", {"household_id": "H-1", "reasons": ["r"]}, county="513432"))
    engine.apply(record("return_risk.cleared", {"household_id": "H-1"}, county="513432"))
    late = engine.advance(T0 + timedelta(days=20))
    first, second = engine.score("513431", 2026), engine.score("513432", 2026)
    # 513431: its critical finding withdrawn (no deduction, no gate), its household still flagged
    assert (first.components["inspections"], first.components["rectification"], first.gated) == (100.0, 100.0, False)
    assert first.components["daily_management"] < 100.0
    # 513432: its minor finding counts, rejected once and overdue; its household cleared
    assert second.components["inspections"] == 100 - 2.0 and second.components["daily_management"] == 100.0
    assert second.components["rectification"] < 100.0
    assert {(c.region_code, c.component) for c in late} == {("513432", "rectification")}
    assert engine.team_points("team-1", "513431")[0] == 0 and engine.team_points("team-2", "513432")[0] == 1
