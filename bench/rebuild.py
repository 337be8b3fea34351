"""Rebuild every score from intake's event store (issue 7), next to the raw export read rate.

1. Fill: a fresh intake database with the national regions (bench/regions.py, loaded through
   KAOHE_REGIONS_FILE as intake's set-up does) gets `events` valid events over every county,
   appended by intake's own store (`append_many`: validation, the ledger, the hash chain) in
   process, 5,000 per transaction. They are then marked published (the relay's position moved to
   the head): the stack starts as after a restart (the local broker is memory only) with
   scoring's database empty, the case `POST /v1/rebuilds` is for. Nothing is kept between runs.
2. The whole stack starts on that data (`python -m services.kit.run`, as a user's would).
3. Baseline: `GET /v1/events/export` streamed from the running intake API with httpx, each line
   parsed with orjson: events/s.
4. Once the scoring worker's group has placed it, `POST /v1/rebuilds` on the scoring API, timed
   until `GET /v1/rebuilds/{id}` says done (events/s = events replayed / that time, which includes
   the worker taking the request up, within about a second). Target ≥ 15,000 events/s.
5. Peak memory (VmHWM from /proc) of each worker process and the intake relay, after the rebuild
   and once the score messages it caused have been consumed. Target ≤ 300 MB.

`--profile FILE` samples the scoring worker with py-spy during the rebuild and prints where its
time went, by function.
"""

import argparse
import itertools
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
import orjson
from sqlalchemy import func, select, update
from sqlmodel import Session

from bench.intake import Stack, cpu_seconds, drop_postgres, postgres_database
from bench.regions import counties, write
from bench.scoring import envelopes, placed_owners
from services.events import registry
from services.intake.regions.service import Directory, load, regions_file
from services.intake.store.models import Published, StoredEvent
from services.intake.store.service import append_many
from services.kit.db import service_engine
from services.kit.migrate import upgrade
from services.kit.settings import Settings
from services.scoring.base import Outbox

WORKERS = ("services.scoring.worker", "services.scoring.relay", "services.scoring.writer", "services.ranking.worker",
           "services.notify.worker", "services.intake.relay")
TARGET_EVENTS_PER_S = 15_000
TARGET_PEAK_MB = 300


def fill(settings: Settings, total: int, chunk: int = 5000) -> dict:
    """Migrate intake's database, load the regions file, append `total` events through the store."""
    engine = service_engine(settings, "intake")
    try:
        upgrade("intake", engine, settings.database("intake")[1])
        data = regions_file(settings.regions_file)
        with Session(engine) as s:
            load(session=s, data=data)
            s.commit()
        directory = Directory(engine)
        stream = envelopes(total, [c["code"] for c in counties(data)])
        started, stored = time.perf_counter(), 0
        while stored < total:
            items = [registry.parse(body) for _, _, body in itertools.islice(stream, min(chunk, total - stored))]
            with Session(engine) as s:
                outcomes = append_many(session=s, items=items, directory=directory)
                s.commit()
            bad = [o for o in outcomes if o.status != "accepted"]
            if bad:
                raise RuntimeError(f"intake refused a generated event: {bad[0].problem}")
            stored += len(items)
            if stored % 100_000 == 0:
                print(f"  filled {stored:,} events ({stored / (time.perf_counter() - started):,.0f}/s)", flush=True)
        elapsed = time.perf_counter() - started
        with Session(engine) as s:
            count = s.execute(select(func.count()).select_from(StoredEvent)).scalar_one()
            s.execute(update(Published).values(sequence=count))  # published, as far as the new stack knows
            s.commit()
    finally:
        engine.dispose()
    return {"events": count, "seconds": elapsed, "events_per_s": total / elapsed}


def export_rate(stack: Stack) -> dict:
    """The baseline: intake's whole export over HTTP, every line parsed."""
    started, lines = time.perf_counter(), 0
    with httpx.stream("GET", f"{stack.url}/v1/events/export", headers=stack.headers,
                      timeout=httpx.Timeout(10.0, read=300.0)) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line:
                orjson.loads(line)
                lines += 1
    elapsed = time.perf_counter() - started
    return {"events": lines, "seconds": elapsed, "events_per_s": lines / elapsed}


def rebuild(stack: Stack, timeout: float) -> dict:
    """POST /v1/rebuilds, then poll until the worker has done it."""
    with httpx.Client(base_url=stack.scoring_url, headers=stack.headers, timeout=30) as client:
        started, posted = time.perf_counter(), datetime.now(timezone.utc)
        request = client.post("/v1/rebuilds").raise_for_status().json()
        while True:
            state = client.get(f"/v1/rebuilds/{request['id']}").raise_for_status().json()
            if state["status"] in ("done", "failed"):
                break
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"rebuild not done after {timeout:.0f} s: {state}")
            time.sleep(0.1)
        elapsed = time.perf_counter() - started
    if state["status"] == "failed":
        raise RuntimeError(f"rebuild failed: {state['error']}")
    claimed_after = (datetime.fromisoformat(state["started_at"]) - posted).total_seconds()
    return {"events": state["events"], "seconds": elapsed, "events_per_s": state["events"] / elapsed,
            "claimed_after_s": round(claimed_after, 2),
            "started_at": state["started_at"], "done_at": state["done_at"]}


def profiled(pid: int, out: Path) -> subprocess.Popen:
    """py-spy sampling `pid` (every thread, non-idle, 100 Hz) into `out` (collapsed stacks) until stopped."""
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "--pid", str(pid), "--format", "raw", "--output", str(out),
                             "--nonblocking", "--rate", "100"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summarize(collapsed: Path, top: int = 25) -> dict:
    """Share of samples per function: inclusive (on the stack) and self (where the time was spent)."""
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [re.sub(r" \((?:.*/)?([^/:]+):\d+\)$", r" (\1)", f) for f in stack.split(";")]  # drop dirs, lines
        n = int(count)
        total += n
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    return {"samples": total,
            "inclusive": [(f, round(n / total, 3)) for f, n in inclusive.most_common(top)] if total else [],
            "self": [(f, round(n / total, 3)) for f, n in own.most_common(top)] if total else []}


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM) so far, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def placed(settings: Settings, seconds: float) -> float:
    """Wait until the scoring worker's group has placed it (it claims every partition of intake's
    topic in its database): a rebuild asked earlier waits for that, which is the group join, not
    the rebuild (docs/scoring.md). Returns the seconds waited."""
    started = time.monotonic()
    scoring = service_engine(settings, "scoring")
    try:
        while True:
            if None not in placed_owners(scoring, settings.topic_partitions):
                return time.monotonic() - started
            if time.monotonic() - started > seconds:
                raise RuntimeError(f"the scoring worker was not placed in its group within {seconds:.0f} s")
            time.sleep(0.2)
    finally:
        scoring.dispose()


def settle(stack: Stack, settings: Settings, seconds: float) -> float:
    """Wait until scoring's outbox is sent and the scoring and ranking workers are back to idle
    polling (each under a quarter of a core for three seconds in a row), or `seconds` pass: the
    ranking and notify workers take in the score messages the rebuild caused, and the scoring
    worker restores its engine if it holds only some partitions. Returns the seconds waited."""
    started = time.monotonic()
    deadline = started + seconds
    scoring = service_engine(settings, "scoring")
    table = Outbox.__table__
    try:
        while time.monotonic() < deadline:
            with scoring.connect() as conn:
                unsent = conn.execute(select(func.count()).select_from(table).where(table.c.sent_at.is_(None)))
                if unsent.scalar_one() == 0:
                    break
            time.sleep(0.5)
    finally:
        scoring.dispose()
    children = stack.children()
    for name in ("services.scoring.worker", "services.ranking.worker"):
        pid, quiet = children.get(name), 0
        while pid is not None and quiet < 3 and time.monotonic() < deadline:
            quiet = quiet + 1 if _cpu_share(pid, 1.0) < 0.25 else 0
    return time.monotonic() - started


def _cpu_share(pid: int, seconds: float) -> float:
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def measure(events: int, database_url: str | None = None, then: Callable[[Stack], dict] | None = None,
            profile: Path | None = None) -> dict:
    """The whole part on SQLite (`database_url` None) or on a PostgreSQL database (every service);
    `then(stack)` runs on the same stack afterwards (`python -m bench` measures the standings there).
    `profile`: py-spy samples the scoring worker during the rebuild into that file (collapsed stacks)."""
    phases: dict[str, float] = {}
    clock = time.monotonic()

    def phase(name: str) -> None:
        nonlocal clock
        phases[name] = round(time.monotonic() - clock, 1)
        clock = time.monotonic()

    with TemporaryDirectory() as tmp:
        regions = Path(tmp) / "national.json"
        data = write(regions)
        env = {"KAOHE_REGIONS_FILE": str(regions)}
        settings = Settings(data_dir=Path(tmp), regions_file=regions, database_url=database_url)
        print(f"filling intake's store with {events:,} events over {len(counties(data)):,} counties…", flush=True)
        filled = fill(settings, events)
        phase("fill")
        with Stack(Path(tmp), database_url, every_service=True, env=env) as stack:
            phase("start")
            print("baseline: reading intake's export…", flush=True)
            export = export_rate(stack)
            phase("export")
            placed(settings, 120)
            phase("group join")
            print("rebuild (POST /v1/rebuilds)…", flush=True)
            spy = profiled(stack.children()["services.scoring.worker"], profile) if profile else None
            rebuilt = rebuild(stack, timeout=max(600.0, events / 500))
            if spy:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
                rebuilt["profile"] = summarize(profile)
            phase("rebuild")
            settled = settle(stack, settings, 180)
            peaks = {name: peak_rss_mb(pid) for name, pid in sorted(stack.children().items()) if name in WORKERS}
            phase("settle")
            after = then(stack) if then else None
            if then:  # what the standings and freshness that followed added (the scoring worker's engine grows)
                after["peak_rss_mb_after"] = {name: peak_rss_mb(pid) for name, pid in sorted(stack.children().items())
                                              if name in WORKERS}
            phase("then")
        phase("stop")
    return {"events": events, "counties": len(counties(data)), "fill": filled, "export": export, "rebuild": rebuilt,
            "ratio_to_export": rebuilt["events_per_s"] / export["events_per_s"], "peak_rss_mb": peaks,
            "phases_s": phases, "settled_s": round(settled, 1), **({"then": after} if then else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="50,000 events")
    parser.add_argument("--postgres", action="store_true", help="on a fresh PostgreSQL database instead of SQLite")
    parser.add_argument("--profile", type=Path, help="py-spy the scoring worker during the rebuild into this file")
    args = parser.parse_args()
    pg = postgres_database() if args.postgres else None
    if args.postgres and not pg:
        return
    try:
        r = measure(50_000 if args.quick else args.events, pg, profile=args.profile)
    finally:
        if pg:
            drop_postgres(pg)
    print(f"\nfill {r['fill']['events_per_s']:,.0f} events/s in process; export {r['export']['events_per_s']:,.0f} "
          f"events/s; rebuild {r['rebuild']['events_per_s']:,.0f} events/s ({r['events']:,} events in "
          f"{r['rebuild']['seconds']:.1f} s), {r['ratio_to_export']:.2f} of the export rate")
    for name, mb in r["peak_rss_mb"].items():
        print(f"  peak RSS {name}: {mb:,.0f} MB")
    if args.profile:
        p = r["rebuild"]["profile"]
        print(f"\nscoring worker during the rebuild, {p['samples']:,} samples (py-spy, {args.profile}):")
        for kind in ("inclusive", "self"):
            print(f"  {kind}:")
            for name, share in p[kind]:
                print(f"    {share:6.1%}  {name}")


if __name__ == "__main__":
    main()
