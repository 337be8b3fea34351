"""Building stored records for the engine (the shape the worker will read from Kafka)."""

import uuid
from datetime import date, datetime, timedelta, timezone
from typing import Any

from services.events.registry import Recorded, parse

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=timezone.utc)  # 09:00 in Beijing
_seq = iter(range(1, 10**9))


def record(type_: str, payload: dict[str, Any], *, county: str = "513431", at: datetime = T0,
           event_id: str | None = None) -> Recorded:
    event = parse({"event_id": event_id or str(uuid.uuid4()), "type": type_, "occurred_at": at.isoformat(),
                   "region_code": county, "source": "tests", "payload": payload})
    return Recorded(sequence=next(_seq), recorded_at=at, event=event)


def finding(fid: str, *, severity: str = "major", category: str = "basic_work", indicator: str = "registry_accuracy",
            deadline: date | None = None) -> dict[str, Any]:
    return {"finding_id": fid, "category": category, "indicator": indicator, "severity": severity,
            "description": "x", "responsible_unit": "u", "responsible_person": "p",
            "deadline": (deadline or (T0.date() + timedelta(days=30))).isoformat()}


def inspection(*findings: dict[str, Any], county: str = "513431", at: datetime = T0, households: int = 100,
               villages: int = 10, team: str = "team-1") -> Recorded:
    return record("inspection.recorded", {"inspection_id": f"I-{uuid.uuid4().hex[:8]}", "mode": "unannounced",
                                          "team_id": team, "villages_sampled": villages,
                                          "households_sampled": households, "findings": list(findings)},
                  county=county, at=at)


def step(type_: str, fid: str, *, county: str = "513431", at: datetime = T0 + timedelta(days=1)) -> Recorded:
    payload = {"finding_id": fid}
    if type_ in ("rectification.reported", "finding.disputed"):
        payload["evidence"] = ["e"]
    elif type_ in ("rectification.verified", "rectification.rejected"):
        payload["checked_by"] = "c"
    else:
        payload["decided_by"] = "d"
    return record(type_, payload, county=county, at=at)
