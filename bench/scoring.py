"""Scoring worker throughput next to the raw kafka-python consume + json.loads rate, same broker,
same run, on SQLite and on PostgreSQL where reachable. Part of `make bench` (`run()`, and
`scale_out()`: one and two worker processes in a group on PostgreSQL).

The worker is measured as deployed: `python -m services.scoring.worker`, a process of its own with
its outbox relay as a child process (`processes_rate`). The baseline parses with the standard
library's `json.loads`, as issue 3 defines it; the same read with `orjson.loads` (about twice as
fast a parse) is measured and reported next to it.

Events are generated as intake publishes them (valid ledger histories, round robin over the
counties: the national set under `make bench` and with `--national`, Sichuan's otherwise) and
produced straight to `kaohe.intake.events.v1` on a local broker once the worker holds its
partitions; its clock starts when it is let go at them. They carry no headers: intake's six
(event id, type, version, sequence, request id, outbox id) slow kafka-python's raw read to about
two fifths (it decodes every header of every record), and the worker, which decodes them only
when it reads them (services/kit/records.py), by about a tenth; with them the ratio would rise
from about 0.4 to 0.7-0.9 (docs/performance.md, nineteenth session). Without them is the
stricter comparison.
"""

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from tempfile import TemporaryDirectory

import orjson
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from sqlalchemy import select
from sqlmodel import Session

from bench.intake import cpu_seconds, drop_postgres, postgres_database, process_name, process_table
from bench.regions import national_regions
from services.events import registry, topics
from services.intake.regions.service import shipped_regions
from services.kit.broker import LocalBroker, free_port
from services.kit.db import make_engine
from services.kit.kafka import ensure_topics
from services.kit.migrate import upgrade
from services.scoring import store
from services.scoring.models import ConsumerOffset

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
    """Stored records (envelope + recorded_at + sequence) as intake publishes them (without its headers)."""
    for seq, (county, at, body) in enumerate(envelopes(total, counties), start=1):
        if seq > total:
            return
        yield county, registry.encode_record(seq, at, body)


def send(bootstrap: str, records: Iterable[tuple[str, bytes]]) -> int:
    """Produce (county, value) records to intake's topic, keyed by county as intake's relay does."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, batch_size=512 * 1024)
    count = 0
    for county, value in records:
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
    """The raw rate read `passes` times: one read of 200,000 messages takes two to four seconds, and
    single reads moved between 44k and 130k messages/s from run to run. The median is the baseline."""
    return [raw_rate(bootstrap, total, loads) for _ in range(passes)]


def processes_rate(url: str, total: int, counties: list[dict], batch: int, processes: int, logs: Path,
                   raw_passes: int = 0, timeout: float = 300) -> dict:
    """Events/s of `processes` scoring worker processes in one consumer group, as deployed
    (`python -m services.scoring.worker`, each with its outbox relay as a child process; on
    PostgreSQL the relays share the outbox), on a broker of their own.

    The workers join the group on an empty topic; once they hold every partition between them
    (their claims in scoring's database), they are stopped (SIGSTOP) while the events are
    produced, so the producer's CPU is not counted, and continued (SIGCONT); the clock runs from
    there until scoring's database holds every event applied. The pause is well inside the
    group's session and poll-interval timeouts, so the group does not notice it. With
    `raw_passes`, the raw consume rates are then read on the same broker from the same messages
    (`raw_rates`, with json.loads and with orjson.loads)."""
    records = list(events(total, [c["code"] for c in counties]))
    db = make_engine(url)
    upgrade("scoring", db)
    with Session(db) as s:
        store.save_counties(s, counties)
        s.commit()
    result: dict = {"processes": processes, "events": total}
    with LocalBroker(free_port()) as broker:
        ensure_topics(broker.bootstrap_servers, [topics.INTAKE_EVENTS, topics.SCORING_SCORES,
                                                 topics.dead_letter(topics.INTAKE_EVENTS)], 6)
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, "KAOHE_TOPIC_PARTITIONS": "6",
               "KAOHE_SCORING_DATABASE_URL": url, "KAOHE_SCORING_BATCH": str(batch), "KAOHE_SCORING_TICK_S": "3600",
               "KAOHE_CONSUMER_MAX_POLL_INTERVAL_MS": "20000", "KAOHE_CONSUMER_SESSION_TIMEOUT_MS": "10000",
               "KAOHE_METRICS_PORT": "0", "KAOHE_INTAKE_URL": "http://127.0.0.1:9", "KAOHE_LOG_LEVEL": "WARNING"}
        running = []
        try:
            for i in range(processes):
                log = (logs / f"scoring-worker-{processes}-{i + 1}.log").open("wb")
                running.append(subprocess.Popen([sys.executable, "-m", "services.scoring.worker"], env=env,
                                                stdout=log, stderr=subprocess.STDOUT))
                log.close()
            deadline, settled, seen = time.monotonic() + timeout, 0, None
            while settled < 10:  # the same owners, one per process, for 2 s: the group's rebalances are done
                if time.monotonic() > deadline or any(p.poll() is not None for p in running):
                    raise RuntimeError(f"{processes} scoring workers were not placed in their group (logs: {logs})")
                owners = placed_owners(db)
                settled = settled + 1 if owners == seen and len(owners) == processes and None not in owners else 0
                seen = owners
                time.sleep(0.2)
            # each worker's batch writer (services/scoring/writer.py) and relay; the multiprocessing
            # resource tracker beside them does nothing here
            table = process_table()
            children = {child: process_name(args, "services.scoring.worker")
                        for p in running for child, args in table.get(p.pid, [])}
            writers = [c for c, name in children.items() if name == "services.scoring.writer"]
            relays = [c for c, name in children.items() if name == "services.scoring.relay"]

            def cpu() -> tuple[float, float, float, float, float, float]:
                # the workers', their writers', their relays', the broker's, PostgreSQL's, the whole machine's
                return (sum(cpu_seconds(p.pid) for p in running), sum(map(cpu_seconds, writers)),
                        sum(map(cpu_seconds, relays)), cpu_seconds(broker.process.pid),
                        sum(map(cpu_seconds, server_pids())) if url.startswith("postgresql") else 0.0,
                        machine_busy_s())

            for p in running:
                p.send_signal(signal.SIGSTOP)
            sending = time.perf_counter()
            send(broker.bootstrap_servers, records)
            produce_s = time.perf_counter() - sending
            before = cpu()
            start = time.perf_counter()
            for p in running:
                p.send_signal(signal.SIGCONT)
            while (applied := applied_in(db)) < total:
                if time.monotonic() > deadline or any(p.poll() is not None for p in running):
                    raise RuntimeError(f"{applied:,} of {total:,} events applied by {processes} scoring workers "
                                       f"(logs: {logs})")
                time.sleep(0.05)
            elapsed = time.perf_counter() - start
            workers, writer, relay, broker_cpu, server, busy = (a - b for a, b in zip(cpu(), before))
            # each claim is one assignment's token: other owners now mean the group rebalanced while
            # timed (a worker stopped past its session timeout is evicted on SIGCONT and joins again)
            rebalanced = placed_owners(db) != seen
        finally:
            for p in running:
                p.send_signal(signal.SIGCONT)
                p.terminate()
            for p in running:
                p.wait(60)
        result.update({"seconds": elapsed, "events_per_s": total / elapsed, "worker_cores": round(workers / elapsed, 2),
                       "worker_cpu_us_per_event": round(workers / total * 1e6, 1),
                       "writer_cores": round(writer / elapsed, 2),
                       "writer_cpu_us_per_event": round(writer / total * 1e6, 1),
                       "relay_cores": round(relay / elapsed, 2),
                       "relay_cpu_us_per_event": round(relay / total * 1e6, 1),
                       "broker_cpu_us_per_event": round(broker_cpu / total * 1e6, 1),
                       "database_cpu_us_per_event": round(server / total * 1e6, 1),
                       "machine_cores_busy": round(busy / elapsed, 2),
                       "machine_cores": os.cpu_count(), "produce_s": round(produce_s, 1), "rebalanced": rebalanced})
        if raw_passes:
            result["raw_consume_passes"] = raw_rates(broker.bootstrap_servers, total, raw_passes)
            result["raw_consume_orjson_passes"] = raw_rates(broker.bootstrap_servers, total, raw_passes, orjson.loads)
            for name in ("raw_consume", "raw_consume_orjson"):
                result[f"{name}_per_s"] = statistics.median(result[f"{name}_passes"])
    db.dispose()
    return result


def server_pids() -> list[int]:
    """The PostgreSQL server's processes on this machine (the postmaster and its backends)."""
    pids = []
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                pids.append(int(comm.parent.name))
        except (OSError, ValueError):
            continue
    return pids


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (not idle or waiting on I/O) since boot: /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def placed_owners(db, partitions: int = 6) -> list[str | None]:
    """The distinct owners of intake's `partitions` partitions in scoring's database, as the
    workers claimed them (None among them: a partition not claimed yet)."""
    with Session(db) as s:
        rows = s.execute(select(ConsumerOffset.owner).where(ConsumerOffset.topic == topics.INTAKE_EVENTS)).all()
    return sorted({r.owner for r in rows}, key=str) if len(rows) >= partitions else [None]


def applied_in(db) -> int:
    with Session(db) as s:
        return store.applied_count(s)


def scale_out(total: int, batch: int, regions: dict | None = None, counts: tuple[int, ...] = (1, 2)) -> dict | None:
    """`processes_rate` for each count of worker processes, each on a fresh PostgreSQL database (the
    scale-out backend: on SQLite run one scoring worker, docs/operations.md); None without PostgreSQL."""
    regions = [r for r in (regions or shipped_regions())["regions"] if r["level"] == "county"]
    counties = [{**r, "baseline_status": r["status"]} for r in regions]
    results = {}
    with TemporaryDirectory() as tmp:
        for n in counts:
            url = postgres_database()
            if url is None:
                return None
            try:
                results[str(n)] = processes_rate(url, total, counties, batch, n, Path(tmp))
            finally:
                drop_postgres(url)
    return results


def scale_out_line(results: dict | None) -> str | None:
    """`scale_out`'s figures as one line: each count's events/s, its speed-up over one process, and
    the cores the workers and the whole machine were busy."""
    if not results:
        return None
    one = results.get("1", {}).get("events_per_s")
    parts = []
    for n, r in results.items():
        speedup = f", {r['events_per_s'] / one:.2f}x one" if one and n != "1" else ""
        parts.append(f"{n} worker process{'es' if n != '1' else ''} {r['events_per_s']:,.0f} events/s{speedup} "
                     f"({detail(r)})")
    return f"{next(iter(results.values()))['events']:,} events: " + "; ".join(parts)


def detail(r: dict) -> str:
    """Where `processes_rate`'s CPU went: the workers', their writers', their relays', the broker's,
    PostgreSQL's (on PostgreSQL), the whole machine's; and a warning if the group rebalanced while
    timed."""
    server = f"PostgreSQL {r['database_cpu_us_per_event']:.0f} µs/event; " if r.get("database_cpu_us_per_event") else ""
    warning = (f"; THE GROUP REBALANCED while timed (events produced in {r.get('produce_s', 0):.1f} s, the workers "
               "stopped meanwhile): this figure counts a rejoin") if r.get("rebalanced") else ""
    return (f"workers {r['worker_cores']:.2f} cores, {r['worker_cpu_us_per_event']:.0f} µs CPU/event; their writers "
            f"{r['writer_cores']:.2f} cores, {r['writer_cpu_us_per_event']:.0f} µs/event; relays "
            f"{r['relay_cores']:.2f} cores, {r['relay_cpu_us_per_event']:.0f} µs/event; the broker "
            f"{r['broker_cpu_us_per_event']:.0f} µs/event; {server}machine {r['machine_cores_busy']:.2f} of "
            f"{r['machine_cores']} busy{warning}")


def run(total: int, batch: int, postgres: bool, regions: dict | None = None) -> dict:
    """One worker process (`processes_rate`) on SQLite, and on PostgreSQL where reachable, each
    next to the raw consume rates read on its own broker. `regions`: the region set the events
    are spread over (default: the shipped Sichuan data)."""
    regions = [r for r in (regions or shipped_regions())["regions"] if r["level"] == "county"]
    counties = [{**r, "baseline_status": r["status"]} for r in regions]
    results: dict = {"events": total, "batch": batch, "counties": len(counties)}
    with TemporaryDirectory() as tmp:
        backends = [("sqlite", f"sqlite:///{Path(tmp) / 'scoring.db'}")]
        pg = postgres_database() if postgres else None
        if pg:
            backends.append(("postgresql", pg))
        try:
            for name, url in backends:
                r = results[name] = processes_rate(url, total, counties, batch, 1, Path(tmp), raw_passes=5)
                r["ratio_to_raw"] = r["events_per_s"] / r["raw_consume_per_s"]
                r["ratio_to_raw_orjson"] = r["events_per_s"] / r["raw_consume_orjson_per_s"]
        finally:
            if pg:
                drop_postgres(pg)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--quick", action="store_true", help="10,000 events")
    parser.add_argument("--national", action="store_true", help="over the national regions (bench/regions.py)")
    parser.add_argument("--scale-out", type=int, metavar="EVENTS",
                        help="also one and two worker processes on PostgreSQL, this many events")
    args = parser.parse_args()
    r = run(10_000 if args.quick else args.events, args.batch, not args.no_postgres,
            national_regions() if args.national else None)
    print(f"\n{r['events']:,} events over {r['counties']:,} counties; baseline: raw kafka-python consume + "
          f"json.loads on the same broker, median of 5 reads")
    print(f"{'figure':<44}{'value':>14}{'baseline':>14}{'ratio':>8}{'target':>8}")
    for name in ("sqlite", "postgresql"):
        if name in r:
            b = r[name]
            print(f"{name + ': scoring worker events/s':<44}{b['events_per_s']:>14,.0f}"
                  f"{b['raw_consume_per_s']:>14,.0f}{b['ratio_to_raw']:>8.2f}{'≥0.4':>8}"
                  f"   (reads {min(b['raw_consume_passes']):,.0f}-{max(b['raw_consume_passes']):,.0f}; to orjson "
                  f"{b['raw_consume_orjson_per_s']:,.0f}: {b['ratio_to_raw_orjson']:.2f}; {detail(b)})")
    if args.scale_out:
        line = scale_out_line(scale_out(args.scale_out, args.batch, national_regions() if args.national else None))
        print(f"scale-out on postgresql, {line}" if line else "scale-out: no PostgreSQL reachable")


if __name__ == "__main__":
    os.environ.setdefault("KAOHE_LOG_LEVEL", "WARNING")
    main()
