"""Publishes what notify reads, as the other services' relays publish it: intake records
(key = county), score messages and standing messages (with an `outbox_id` header)."""

import itertools
import uuid
from datetime import date, datetime, timedelta, timezone

import orjson
from kafka import KafkaProducer

from services.events import registry, topics

_ids = itertools.count(1)


def finding(finding_id: str, severity: str, deadline: date) -> dict:
    return {"finding_id": finding_id, "category": "policy_implementation", "indicator": "housing",
            "severity": severity, "description": "贫困户住房安全未保障 (unsafe house)", "village_id": None,
            "household_id": None, "responsible_unit": "县住建局", "responsible_person": "某某",
            "deadline": deadline.isoformat()}


class Sources:
    def __init__(self, bootstrap: str) -> None:
        self.producer = KafkaProducer(bootstrap_servers=bootstrap)
        self.sent: dict[bytes, int] = {}  # value → the outbox_id it was first sent with

    def _send(self, topic: str, key: str, value: bytes, message_id: int | None = None) -> None:
        message_id = message_id or next(_ids)
        self.sent.setdefault(value, message_id)
        self.producer.send(topic, key=key.encode(), value=value, headers=[("outbox_id", str(message_id).encode())])

    def resend(self, topic: str, key: str, value: bytes) -> None:
        """What a relay does after a crash: the same message, under the same outbox_id."""
        self._send(topic, key, value, self.sent[value])
        self.producer.flush()

    def event(self, county: str, type_: str, payload: dict, occurred_at: datetime) -> bytes:
        """An intake record; returns its bytes (to send the very same again: a redelivery)."""
        event = {"event_id": str(uuid.uuid4()), "type": type_, "schema_version": 1, "region_code": county,
                 "source": "test", "occurred_at": occurred_at.isoformat(), "payload": payload}
        record = registry.encode_record(next(_ids), datetime.now(timezone.utc), event)
        self.raw(topics.INTAKE_EVENTS, county, record)
        return record

    def inspection(self, county: str, findings: list[dict], *, days_ago: int = 3) -> bytes:
        payload = {"inspection_id": f"I-{uuid.uuid4().hex[:8]}", "mode": "unannounced", "team_id": "team-1",
                   "villages_sampled": 10, "households_sampled": 100, "findings": findings}
        return self.event(county, "inspection.recorded", payload,
                          datetime.now(timezone.utc) - timedelta(days=days_ago))

    def score(self, code: str, grade: str, previous_grade: str | None, *, level: str = "county",
              total: float = 70.0, previous_total: float | None = 80.0, as_of: datetime | None = None) -> bytes:
        league = "in_poverty" if level == "county" else None
        value = orjson.dumps({"region_code": code, "level": level, "league": league,
                              "year": 2026, "total": total, "grade": grade, "gated": False, "components": {},
                              "previous_total": previous_total, "previous_grade": previous_grade,
                              "policy_version": "default-v1", "cause": "test",
                              "as_of": registry.iso_utc(as_of or datetime.now(timezone.utc))})
        self.raw(topics.SCORING_SCORES, code, value)
        return value

    def standing(self, code: str, scope: str, rank: int | None, previous_rank: int | None) -> bytes:
        value = orjson.dumps({"region_code": code, "scope": scope, "level": "county", "league": "in_poverty",
                              "year": 2026, "rank": rank, "previous_rank": previous_rank, "total": 70.0,
                              "previous_total": 71.0, "grade": "好", "movement": None,
                              "changed_at": datetime.now(timezone.utc).isoformat()})
        self.raw(topics.RANKING_STANDINGS, code, value)
        return value

    def raw(self, topic: str, key: str, value: bytes) -> None:
        self._send(topic, key, value)
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()
