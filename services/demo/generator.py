"""A realistic assessment year for Sichuan, as events (pure: no HTTP).

What the seeds describe: inspection campaigns that sample 10 villages × 10 households per
county (unannounced visits, third-party checks), findings across the six categories and the
indicators, rectifications reported and verified with realistic delays (some rejected and fixed
again, some left overdue), disputes that end upheld or withdrawn, monthly daily-management
checks, return-to-poverty alerts, inspectors' absences, year-end results (announced in January of
the next year) and a few counties exiting poverty.

Deterministic: the same seed and year give the same events with the same ids, so loading them
twice stores them once (intake is idempotent on event_id).
"""

import random
import uuid
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from services.events.vocabulary import FindingCategory, Indicator

BEIJING = ZoneInfo("Asia/Shanghai")
NAMESPACE = uuid.UUID("6f1c1c55-8a43-4e0e-9b0a-6b6f0f1d2a00")
SOURCE = "demo"
CAMPAIGN_MONTHS = (3, 6, 9, 11)  # quarterly 督查 campaigns
TEAMS = [f"team-{i:02d}" for i in range(1, 25)]
CATEGORY_WEIGHTS = {  # seed 004's six shortfalls, the commonest first
    FindingCategory.basic_work: 30, FindingCategory.policy_implementation: 22,
    FindingCategory.assistance_measures: 18, FindingCategory.project_implementation: 12,
    FindingCategory.stable_exit: 10, FindingCategory.department_assistance: 8,
}
INDICATORS = {
    FindingCategory.basic_work: [Indicator.registry_accuracy, Indicator.poverty_incidence],
    FindingCategory.policy_implementation: [Indicator.education, Indicator.medical, Indicator.housing,
                                            Indicator.food, Indicator.clothing],
    FindingCategory.assistance_measures: [Indicator.collective_economy, Indicator.water, Indicator.electricity],
    FindingCategory.project_implementation: [Indicator.road, Indicator.clinic, Indicator.cultural_room,
                                             Indicator.network],
    FindingCategory.stable_exit: [Indicator.housing, Indicator.water, Indicator.medical, Indicator.food],
    FindingCategory.department_assistance: [Indicator.broadcast, Indicator.network, Indicator.collective_economy],
}
DESCRIPTIONS = {
    Indicator.registry_accuracy: "建档立卡信息与实际不符", Indicator.poverty_incidence: "贫困发生率测算依据不足",
    Indicator.education: "义务教育阶段有辍学学生未劝返", Indicator.medical: "基本医疗保险未全覆盖",
    Indicator.housing: "住房安全鉴定不到位，存在危房", Indicator.food: "吃穿不愁保障存在短板",
    Indicator.clothing: "冬季衣被保障不足", Indicator.collective_economy: "村集体经济收入未达标",
    Indicator.water: "饮水安全未保障", Indicator.electricity: "生产用电未通", Indicator.road: "通村道路未硬化",
    Indicator.clinic: "村卫生室无合格村医", Indicator.cultural_room: "文化室未建成",
    Indicator.network: "宽带网络未覆盖",
    Indicator.broadcast: "广播电视信号未覆盖",
}


def event_id(*parts: Any) -> str:
    return str(uuid.uuid5(NAMESPACE, "/".join(map(str, parts))))


def at_local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), tzinfo=BEIJING).astimezone(timezone.utc)


def envelope(type_: str, county: str, moment: datetime, payload: dict[str, Any], *key: Any) -> dict[str, Any]:
    return {"event_id": event_id(type_, county, *key), "type": type_, "schema_version": 1,
            "occurred_at": moment.isoformat(), "region_code": county, "source": SOURCE, "payload": payload}


def county_year(county: dict[str, Any], year: int, seed: int) -> Iterator[dict[str, Any]]:
    """Every event of one county's year (not in time order)."""
    code = county["code"]
    rng = random.Random(f"{seed}/{year}/{code}")
    quality = rng.betavariate(5, 2)  # how well this county works: drives findings and fixes
    # 日常管理: a monthly check of each kind
    for month in range(1, 13):
        for kind in ("registry_accuracy", "team_presence", "work_log"):
            checked = rng.randint(20, 60)
            failed = min(checked, int(rng.expovariate(1.0) * (1.3 - quality) * 3))
            yield envelope("daily_check.recorded", code, at_local(date(year, month, rng.randint(3, 25)), 10),
                           {"check_id": f"DC-{code}-{year}{month:02d}-{kind[:3]}", "kind": kind,
                            "items_checked": checked, "items_failed": failed}, year, month, kind)
    for campaign, month in enumerate(CAMPAIGN_MONTHS):
        visit = date(year, month, rng.randint(5, 24))
        team = rng.choice(TEAMS)
        mode = "third_party" if campaign == 3 else "unannounced"
        findings = []
        for i in range(max(0, int(rng.gauss(6 * (1.2 - quality), 2)))):
            category = rng.choices(list(CATEGORY_WEIGHTS), weights=list(CATEGORY_WEIGHTS.values()))[0]
            indicator = rng.choice(INDICATORS[category])
            severity = rng.choices(["minor", "major", "critical"], weights=[60, 32, 8])[0]
            village = f"V{code}-{rng.randint(1, 10):02d}"
            findings.append({
                "finding_id": f"F-{code}-{year}-{campaign}-{i:02d}", "category": category.value,
                "indicator": indicator.value, "severity": severity, "description": DESCRIPTIONS[indicator],
                "village_id": village, "household_id": f"{village}-H{rng.randint(1, 10):02d}"
                if indicator.value in ("food", "clothing", "education", "medical", "housing") else None,
                "responsible_unit": f"{county['name']}扶贫开发局", "responsible_person": "分管副县长",
                "deadline": (visit + timedelta(days=rng.choice([15, 30, 30, 45, 60]))).isoformat()})
        visited = at_local(visit, 9, 30)
        yield envelope("inspection.recorded", code, visited, {
            "inspection_id": f"I-{code}-{year}-{campaign}", "mode": mode, "team_id": team,
            "villages_sampled": 10, "households_sampled": 100, "findings": findings}, year, campaign)
        for f in findings:
            yield from _ledger(rng, code, f, visit, quality, year)
        if rng.random() < 0.05:  # an inspector missed the visit
            yield envelope("inspector.absence_recorded", code, visited, {
                "team_id": team, "inspector_id": f"{team}-m{rng.randint(1, 5)}", "approved": rng.random() < 0.5},
                year, campaign, "absence")
    # 返贫 alerts: flagged, most cleared within months
    for i in range(rng.randint(0, 3)):
        household = f"V{code}-{rng.randint(1, 10):02d}-R{i}"
        flagged = date(year, rng.randint(1, 10), rng.randint(1, 28))
        yield envelope("return_risk.flagged", code, at_local(flagged, 15),
                       {"household_id": household, "reasons": ["因病"]}, year, household)
        if rng.random() < 0.7:
            yield envelope("return_risk.cleared", code, at_local(flagged + timedelta(days=rng.randint(30, 120)), 15),
                           {"household_id": household}, year, household, "cleared")
    # 年终考核: announced in January of the next year
    result = round(min(100.0, max(55.0, rng.gauss(70 + 25 * quality, 4))), 1)
    yield envelope("year_end_assessment.recorded", code, at_local(date(year + 1, 1, 20), 10),
                   {"year": year, "score": result}, year, "year_end")


def _ledger(rng: random.Random, code: str, f: dict[str, Any], visit: date, quality: float, year: int):
    fid = f["finding_id"]
    day = visit
    if rng.random() < 0.1:  # 举证: the village disputes
        day += timedelta(days=rng.randint(2, 8))
        yield envelope("finding.disputed", code, at_local(day, 14), {"finding_id": fid, "evidence": ["村委会证明"]},
                       fid, "disputed")
        day += timedelta(days=rng.randint(5, 20))
        if rng.random() < 0.4:
            yield envelope("finding.withdrawn", code, at_local(day, 16), {"finding_id": fid, "decided_by": "督查组"},
                           fid, "withdrawn")
            return
        yield envelope("finding.upheld", code, at_local(day, 16), {"finding_id": fid, "decided_by": "督查组"},
                       fid, "upheld")
    for attempt in range(3):
        if rng.random() > 0.55 + 0.4 * quality:
            return  # left open: overdue once the deadline passes
        day += timedelta(days=rng.randint(7, 40))
        yield envelope("rectification.reported", code, at_local(day, 11),
                       {"finding_id": fid, "evidence": [f"{fid}-photo-{attempt}"], "note": "已整改"}, fid, "r", attempt)
        day += timedelta(days=rng.randint(3, 15))
        if rng.random() < 0.2:  # 验收 fails: open again, the failed fix counts
            yield envelope("rectification.rejected", code, at_local(day, 15),
                           {"finding_id": fid, "checked_by": "县验收组", "note": "整改不彻底"}, fid, "x", attempt)
            continue
        yield envelope("rectification.verified", code, at_local(day, 15), {"finding_id": fid, "checked_by": "县验收组"},
                       fid, "v", attempt)
        return


def exits(counties: list[dict[str, Any]], year: int, seed: int) -> Iterator[dict[str, Any]]:
    """A few counties still in poverty exit in the year (脱贫摘帽), announced in the autumn."""
    poor = [c for c in counties
            if c.get("baseline_status", c.get("status")) == "in_poverty" and c.get("poverty_county")]
    order = random.Random(f"{seed}/exits").sample(poor, len(poor))
    rng = random.Random(f"{seed}/{year}/exits")
    for c in order[(year % 8) * 6:(year % 8) * 6 + 6]:  # different counties each year (within 8 years)
        yield envelope("county.status_changed", c["code"], at_local(date(year, 10, rng.randint(8, 28)), 10),
                       {"status": "exited", "exit_year": year}, year, "exit")


def demo_year(counties: list[dict[str, Any]], year: int, *, until: datetime, seed: int = 2020) -> list[dict[str, Any]]:
    """Every event of the demo year (and its January year-end results) up to `until`, in time order."""
    events = [e for c in counties for e in county_year(c, year, seed)]
    events += exits(counties, year, seed)
    events = [e for e in events if datetime.fromisoformat(e["occurred_at"]) <= until]
    events.sort(key=lambda e: (e["occurred_at"], e["event_id"]))
    return events


__all__ = ["SOURCE", "demo_year", "event_id"]
