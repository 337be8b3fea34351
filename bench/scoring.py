"""Scoring worker throughput next to the raw kafka-python consume + json.loads rate, same broker,
same run, on SQLite and on PostgreSQL where reachable. Part of `make bench` (`run()`).

The baseline parses with the standard library's `json.loads`, as issue 3 defines it; the same read
with `orjson.loads` (about twice as fast a parse) is measured and reported next to it.

Events are generated as intake publishes them (valid ledger histories, round robin over the
counties: the national set under `make bench` and with `--national`, Sichuan's otherwise) and
produced straight to `kaohe.intake.events.v1` on a local broker; the worker consumes them in
its consumer group. Its clock starts after the group join, at the first message.
"""

import argparse
import json
import os
import random
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from tempfile import TemporaryDirectory

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlmodel import Session

from bench.intake import drop_postgres, postgres_database
from bench.regions import national_regions
from services.events import registry, topics
from services.intake.regions.service import shipped_regions
from services.kit import heap
from services.kit.broker import LocalBroker, free_port
from services.kit.db import make_engine
from services.kit.kafka import ensure_topics
from services.kit.migrate import upgrade
from services.kit.settings import Settings
from services.scoring import store
from services.scoring.policy.model import shipped
from services.scoring.worker import Worker

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=timezone.utc)


def envelopes(total: int, counties: list[str], seed: int = 3) -> Iterator[tuple[str, datetime, dict]]:
    """(county, occurred_at, envelope) of valid ledger histories, round robin over `counties`:
    an inspection with three findings, a fix reported then verified or rejected, a dispute then
    upheld or withdrawn, a daily check (six events per round). Also what bench.rebuild stores."""
    rng = random.Random(seed)
    count = 0

    def env(type_, county, at, payload):
        nonlocal count
        count += 1
        return county, at, {"event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)), "type": type_,
                            "schema_version": 1, "occurred_at": at.isoformat(), "region_code": county,
                            "source": "bench", "payload": payload}

    n = 0
    while count < total:
        county = counties[n % len(counties)]
        n += 1
        at = T0 + timedelta(seconds=n)
        ids = [f"F{n}-{j}" for j in range(3)]
        yield env("inspection.recorded", county, at, {
            "inspection_id": f"I{n}", "mode": "unannounced", "team_id": f"t{n % 40}", "villages_sampled": 10,
            "households_sampled": 100, "findings": [
                {"finding_id": fid, "category": "basic_work", "indicator": "housing",
                 "severity": rng.choice(["minor", "major", "critical"]), "description": "x",
                 "responsible_unit": "u", "responsible_person": "p",
                 "deadline": (at.date() + timedelta(days=rng.randint(1, 60))).isoformat()} for fid in ids]})
        later = at + timedelta(days=1)
        yield env("rectification.reported", county, later, {"finding_id": ids[0], "evidence": ["e"]})
        yield env(rng.choice(["rectification.verified", "rectification.rejected"]), county,
                  later + timedelta(days=1), {"finding_id": ids[0], "checked_by": "c"})
        yield env("finding.disputed", county, later, {"finding_id": ids[1], "evidence": ["e"]})
        yield env(rng.choice(["finding.upheld", "finding.withdrawn"]), county, later + timedelta(days=1),
                  {"finding_id": ids[1], "decided_by": "d"})
        yield env("daily_check.recorded", county, at, {"check_id": f"D{n}", "kind": "work_log", "items_checked": 20,
                                                      "items_failed": rng.randint(0, 3)})


def events(total: int, counties: list[str]) -> Iterator[tuple[str, bytes]]:
    """Stored records (envelope + recorded_at + sequence) as intake publishes them."""
    for seq, (county, at, body) in enumerate(envelopes(total, counties), start=1):
        if seq > total:
            return
        yield county, registry.encode_record(seq, at, body)


def produce(bootstrap: str, total: int, counties: list[str]) -> int:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=512 * 1024)
    count = 0
    for county, value in events(total, counties):
        producer.send(topics.INTAKE_EVENTS, key=county.encode(), value=value)
        count += 1
    producer.flush()
    producer.close()
    return count


def raw_rate(bootstrap: str, total: int, loads: Callable[[bytes], object] = json.loads) -> float:
    """One read of the whole topic from its start, each value parsed with `loads`: messages/s from
    the first message returned."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    tps = [TopicPartition(topics.INTAKE_EVENTS, p) for p in sorted(consumer.partitions_for_topic(topics.INTAKE_EVENTS))]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    seen, start = 0, None
    while seen < total:
        for batch in consumer.poll(timeout_ms=500, max_records=5000).values():
            if start is None:
                start = time.perf_counter()
            for m in batch:
                loads(m.value)
                seen += 1
    elapsed = time.perf_counter() - start
    consumer.close()
    return total / elapsed


def raw_rates(bootstrap: str, total: int, passes: int = 5, loads: Callable[[bytes], object] = json.loads
              ) -> list[float]:
    """The raw rate read `passes` times: one read of 50,000 messages takes under a second, and
    single reads moved between 44k and 130k messages/s from run to run. The median is the baseline."""
    return [raw_rate(bootstrap, total, loads) for _ in range(passes)]


def worker_rate(bootstrap: str, url: str, total: int, counties: list[dict], batch: int) -> float:
    db = make_engine(url)
    upgrade("scoring", db)
    with Session(db) as s:
        store.save_counties(s, counties)
        s.commit()
    settings = Settings(kafka_bootstrap_servers=bootstrap, scoring_batch=batch, scoring_tick_s=3600,
                        consumer_max_poll_interval_ms=5000)
    heap.tune()  # as `python -m services.scoring.worker` does (kit.consumer.run_worker)
    worker = Worker(settings, db, shipped())
    worker.restore()
    worker.connect()
    worker.tick()
    start, applied = None, 0
    while applied < total:
        polled = worker.consumer.poll(timeout_ms=500, max_records=batch)
        messages = [m for tp in sorted(polled, key=lambda t: t.partition) for m in polled[tp]]
        if worker.scorer is None:  # that poll assigned the partitions: the engine is built next (Worker.run)
            worker.restore()
        if messages:
            start = start or time.perf_counter()
            worker.submit(messages)  # as Worker.run: written while the next poll is read and applied
            applied += len(messages)
    worker.settle()
    elapsed = time.perf_counter() - start
    worker.close()
    with Session(db) as s:
        assert store.applied_count(s) == total
    db.dispose()
    return total / elapsed


def run(total: int, batch: int, postgres: bool, regions: dict | None = None) -> dict:
    """`regions`: the region set the events are spread over (default: the shipped Sichuan data)."""
    regions = [r for r in (regions or shipped_regions())["regions"] if r["level"] == "county"]
    counties = [{**r, "baseline_status": r["status"]} for r in regions]
    results: dict = {"events": total, "batch": batch, "counties": len(counties)}
    with LocalBroker(free_port()) as broker, TemporaryDirectory() as tmp:
        ensure_topics(broker.bootstrap_servers, [topics.INTAKE_EVENTS, topics.SCORING_SCORES,
                                                 topics.dead_letter(topics.INTAKE_EVENTS)], 6)
        produced = produce(broker.bootstrap_servers, total, [r["code"] for r in regions])
        passes = raw_rates(broker.bootstrap_servers, produced)
        results["raw_consume_passes"] = passes
        results["raw_consume_per_s"] = statistics.median(passes)
        orjson_passes = raw_rates(broker.bootstrap_servers, produced, loads=orjson.loads)
        results["raw_consume_orjson_passes"] = orjson_passes
        results["raw_consume_orjson_per_s"] = statistics.median(orjson_passes)
        backends = [("sqlite", f"sqlite:///{Path(tmp) / 'scoring.db'}")]
        pg = postgres_database() if postgres else None
        if pg:
            backends.append(("postgresql", pg))
        try:
            for name, url in backends:
                rate = worker_rate(broker.bootstrap_servers, url, produced, counties, batch)
                results[name] = {"events_per_s": rate, "ratio_to_raw": rate / results["raw_consume_per_s"],
                                 "ratio_to_raw_orjson": rate / results["raw_consume_orjson_per_s"]}
        finally:
            if pg:
                drop_postgres(pg)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--quick", action="store_true", help="10,000 events")
    parser.add_argument("--national", action="store_true", help="over the national regions (bench/regions.py)")
    args = parser.parse_args()
    r = run(10_000 if args.quick else args.events, args.batch, not args.no_postgres,
            national_regions() if args.national else None)
    print(f"\n{r['events']:,} events over {r['counties']:,} counties; baseline: raw kafka-python consume + "
          f"json.loads, same broker, median of {len(r['raw_consume_passes'])} reads "
          f"({min(r['raw_consume_passes']):,.0f}-{max(r['raw_consume_passes']):,.0f}); with orjson.loads "
          f"{r['raw_consume_orjson_per_s']:,.0f}")
    print(f"{'figure':<44}{'value':>14}{'baseline':>14}{'ratio':>8}{'target':>8}")
    for name in ("sqlite", "postgresql"):
        if name in r:
            print(f"{name + ': scoring worker events/s':<44}{r[name]['events_per_s']:>14,.0f}"
                  f"{r['raw_consume_per_s']:>14,.0f}{r[name]['ratio_to_raw']:>8.2f}{'≥0.4':>8}"
                  f"   (to orjson: {r[name]['ratio_to_raw_orjson']:.2f})")


if __name__ == "__main__":
    os.environ.setdefault("KAOHE_LOG_LEVEL", "WARNING")
    main()


