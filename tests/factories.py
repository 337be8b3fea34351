"""Small event factories: valid by default, override what the test is about."""

import random
import uuid
from datetime import date, datetime, timedelta, timezone
from itertools import count
from typing import Any

COUNTY = "513431"  # 昭觉县, Liangshan
OTHER_COUNTY = "513432"  # 喜德县, Liangshan
OTHER_PREFECTURE_COUNTY = "510722"  # 三台县, Mianyang
T0 = datetime(2026, 3, 2, 1, 30, tzinfo=timezone.utc)
_ids = count(1)


def uid() -> str:
    return str(uuid.uuid4())


def envelope(type_: str, payload: dict[str, Any], *, region: str = COUNTY, at: datetime = T0,
             **overrides: Any) -> dict[str, Any]:
    return {"event_id": uid(), "type": type_, "schema_version": 1, "occurred_at": at.isoformat(),
            "region_code": region, "source": "tests", "payload": payload, **overrides}


def finding(finding_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    return {"finding_id": finding_id or f"F-{next(_ids):06d}", "category": "basic_work",
            "indicator": "registry_accuracy", "severity": "major", "description": "registry entry out of date",
            "responsible_unit": "县扶贫开发局", "responsible_person": "张三",
            "deadline": (T0.date() + timedelta(days=30)).isoformat(), **overrides}


def inspection(*findings: dict[str, Any], region: str = COUNTY, at: datetime = T0, **payload: Any) -> dict[str, Any]:
    body = {"inspection_id": f"I-{next(_ids):06d}", "mode": "unannounced", "team_id": "team-1",
            "villages_sampled": 10, "households_sampled": 100, "findings": list(findings), **payload}
    return envelope("inspection.recorded", body, region=region, at=at)


def step(type_: str, finding_id: str, *, region: str = COUNTY, at: datetime = T0 + timedelta(days=1),
         **payload: Any) -> dict[str, Any]:
    """A ledger event about one finding (report, verify, reject, dispute, uphold, withdraw)."""
    defaults = {
        "rectification.reported": {"evidence": ["photo"], "note": ""},
        "rectification.verified": {"checked_by": "验收组"},
        "rectification.rejected": {"checked_by": "验收组"},
        "finding.disputed": {"evidence": ["村委会证明"]},
        "finding.upheld": {"decided_by": "督查组"},
        "finding.withdrawn": {"decided_by": "督查组"},
    }[type_]
    return envelope(type_, {"finding_id": finding_id, **defaults, **payload}, region=region, at=at)


def daily_check(region: str = COUNTY, **payload: Any) -> dict[str, Any]:
    body = {"check_id": f"DC-{next(_ids):06d}", "kind": "registry_accuracy", "items_checked": 50,
            "items_failed": 2, **payload}
    return envelope("daily_check.recorded", body, region=region)


def deadline(days: int) -> str:
    return (T0.date() + timedelta(days=days)).isoformat()


__all__ = ["COUNTY", "OTHER_COUNTY", "OTHER_PREFECTURE_COUNTY", "T0", "date", "daily_check", "deadline",
           "envelope", "finding", "inspection", "step", "uid"]


def stream(total: int, counties: list[str], *, batch: int = 600, findings: int = 3, seed: int = 7):
    """Batches of valid events, round the counties: an inspection with findings, then a
    rectification (verified or rejected), a dispute (upheld or withdrawn) and a daily check."""
    rng = random.Random(seed)
    pending: list[dict[str, Any]] = []
    sent, n = 0, 0
    while sent < total:
        county = counties[n % len(counties)]
        n += 1
        at = T0 + timedelta(minutes=n)
        found = [finding(severity=rng.choice(["minor", "major", "critical"]),
                         deadline=(at.date() + timedelta(days=rng.randint(1, 60))).isoformat())
                 for _ in range(findings)]
        later = at + timedelta(days=1)
        a, b = found[0]["finding_id"], found[1]["finding_id"]
        group = [inspection(*found, region=county, at=at),
                 step("rectification.reported", a, region=county, at=later),
                 step(rng.choice(["rectification.verified", "rectification.rejected"]), a, region=county,
                      at=later + timedelta(days=2)),
                 step("finding.disputed", b, region=county, at=later),
                 step(rng.choice(["finding.upheld", "finding.withdrawn"]), b, region=county,
                      at=later + timedelta(days=1)),
                 {**daily_check(region=county), "occurred_at": at.isoformat()}]
        pending += group
        sent += len(group)
        if len(pending) >= batch:
            yield pending
            pending = []
    if pending:
        yield pending
