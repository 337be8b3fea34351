"""Intake throughput next to baselines measured in the same run.

Figures (issue 2; the full table of issue 7 grows from here):
  * single-event POST /v1/events: requests/s and p99 with 32 concurrent connections (wrk),
    against a FastAPI hello-world served the same way (ratio; target ≥ 0.15);
  * POST /v1/events/batch (1,000 events a request): events/s, against raw executemany inserts
    of rows of the same size into the same database (ratio; target ≥ 0.3), with the whole stack
    running; then again with every other process of the stack paused (intake alone: printed
    under the table, no target of its own).
Runs on SQLite and again on PostgreSQL where reachable. `--quick` shortens every run.
`measure()` is what `python -m bench` calls; run alone, this prints its own table.
"""

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
import orjson
from sqlalchemy import text

from services.kit.access.local import saved_token
from services.kit.broker import free_port
from services.kit.db import make_engine

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = os.environ.get("KAOHE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
COUNTIES = ["513431", "513432", "510722", "511602", "513433", "510726"]


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("installing wrk (Debian package) for the load generator…", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False, capture_output=True)
    found = shutil.which("wrk")
    if not found:
        sys.exit("wrk is needed as the load generator: apt-get install wrk")
    return found


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


def parse_wrk(out: str) -> dict:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: (.*)", out)
    return {"requests_per_s": rps, "p99_ms": float(p99.group(1)) * scale,
            "non_2xx": int(errors.group(1)) if errors else 0, "socket_errors": sock.group(1) if sock else None}


def run_wrk(wrk: str, url: str, seconds: int, script: str | None = None, headers: dict[str, str] | None = None
            ) -> dict:
    """wrk's figures; fails on any non-2xx answer (a run of 401s would measure the key check alone)."""
    args = [wrk, "-t2", "-c32", f"-d{seconds}s", "--latency"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]  # post_event.lua copies these into every request
    if script:
        args += ["-s", script]
    out = subprocess.run(args + [url], capture_output=True, text=True, check=True).stdout
    result = parse_wrk(out)
    if result["non_2xx"]:
        raise RuntimeError(f"wrk {url}: {result['non_2xx']} non-2xx answers\n{out}")
    return result


def hello_world(wrk: str, seconds: int) -> dict:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.hello", str(port)], cwd=ROOT)
    try:
        wait_http(f"http://127.0.0.1:{port}/")
        run_wrk(wrk, f"http://127.0.0.1:{port}/", 2)  # warm-up
        return run_wrk(wrk, f"http://127.0.0.1:{port}/", seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


class Stack:
    """`python -m services.kit.run` in a scratch data dir on free ports: the whole system (broker,
    intake and its relay, scoring, ranking, notify), without demo data unless asked. Once up,
    `headers` carries the admin key the run saved (every API route needs a key).

    `database_url`: intake's database (the other services on SQLite), or with `every_service`
    every service's (one schema each). `env`: more settings (e.g. KAOHE_REGIONS_FILE)."""

    def __init__(self, data_dir: Path, database_url: str | None, *, demo: bool = False, every_service: bool = False,
                 env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port, self.scoring_port, self.ranking_port = free_port(), free_port(), free_port()
        self.env = {**os.environ, "KAOHE_DATA_DIR": str(data_dir), "KAOHE_INTAKE_PORT": str(self.port),
                    "KAOHE_SCORING_PORT": str(self.scoring_port), "KAOHE_RANKING_PORT": str(self.ranking_port),
                    "KAOHE_NOTIFY_PORT": str(free_port()),
                    "KAOHE_BROKER_PORT": str(free_port()), "KAOHE_LOG_LEVEL": "WARNING",
                    "KAOHE_DEMO": "1" if demo else "0", **(env or {})}
        self.env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        if database_url:
            self.env["DATABASE_URL" if every_service else "KAOHE_INTAKE_DATABASE_URL"] = database_url
        self.url = f"http://127.0.0.1:{self.port}"
        self.scoring_url = f"http://127.0.0.1:{self.scoring_port}"
        self.ranking_url = f"http://127.0.0.1:{self.ranking_port}"
        self.log = data_dir / "run.log"

    def __enter__(self) -> "Stack":
        # the supervisor's banner (in run.log) comes once every process is up and the demo data is in
        self.proc = subprocess.Popen([sys.executable, "-m", "services.kit.run"], cwd=ROOT, env=self.env,
                                     stdout=self.log.open("wb"), start_new_session=True)
        deadline = time.monotonic() + 300
        while b"Kaohe is running" not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the stack did not start (see {self.log})")
            time.sleep(0.2)
        self.token = saved_token(self.data_dir, "admin")
        if not self.token:
            raise RuntimeError(f"the stack saved no admin key under {self.data_dir / 'keys'}")
        return self

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def children(self, *, everything: bool = False) -> dict[str, int]:
        """Process name (`services.scoring.worker`, ...) → pid of the supervisor's `python -m`
        children and of theirs (the scoring worker's relay, `services.scoring.relay`, and its
        writer, `services.scoring.writer`); with `everything`, also the supervisor's other children
        by program name (the broker, `tansu`)."""
        parents = process_table()
        found = {}
        for pid, args in parents.get(self.proc.pid, []):
            if (name := process_name(args)) is not None:
                found[name] = pid
                for child, child_args in parents.get(pid, []):
                    if (child_name := process_name(child_args, name)) is not None:
                        found[child_name] = child
            elif everything and args[0]:  # tansu-v0.6.0-510f3e2 → tansu
                found[Path(args[0].decode()).name.split("-")[0]] = pid
        return found

    def __exit__(self, *exc) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)
        self.proc.wait(60)


def batch_events(n: int) -> list[bytes]:
    bodies = []
    for _ in range(n // 1000):
        events = []
        for i in range(1000):
            eid = str(uuid.uuid4())
            events.append({"event_id": eid, "type": "daily_check.recorded", "schema_version": 1,
                           "occurred_at": "2026-06-01T09:00:00+08:00", "region_code": COUNTIES[i % len(COUNTIES)],
                           "source": "bench", "payload": {"check_id": f"BB-{eid}", "kind": "work_log",
                                                          "items_checked": 20, "items_failed": 0}})
        bodies.append(orjson.dumps({"events": events}))
    return bodies


def process_table() -> dict[int, list[tuple[int, list[bytes]]]]:
    """Parent pid → (pid, command-line arguments) of each live process (not the ended ones not
    reaped yet), from /proc."""
    parents: dict[int, list[tuple[int, list[bytes]]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if fields[0] == "Z":
                continue
            args = (stat.parent / "cmdline").read_bytes().split(b"\0")
            parents.setdefault(int(fields[1]), []).append((int(stat.parent.name), args))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return parents


def process_name(args: list[bytes], parent: str | None = None) -> str | None:
    """The module a process runs (`python -m services.scoring.relay` → services.scoring.relay); for
    a child that multiprocessing spawned under `parent` (the scoring worker's batch writer,
    services/scoring/writer.py), `<parent's package>.writer`; else None."""
    if b"-m" in args:
        return args[args.index(b"-m") + 1].decode()
    if parent is not None and any(b"multiprocessing.spawn" in a for a in args):
        return parent.rpartition(".")[0] + ".writer"
    return None


def child_pids(pid: int) -> list[int]:
    """The live processes whose parent is `pid` (a worker's relay)."""
    return [child for child, _ in process_table().get(pid, [])]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def batch_rate(url: str, total: int, headers: dict[str, str], processes: dict[str, int] | None = None, *,
               paused: Iterable[str] = ()) -> dict:
    """Events/s of `total` events sent in 1,000-event batches, one request at a time. With
    `processes` (name → pid), also the CPU each spent per event meanwhile (µs), this client's
    included: the stack's processes share the machine's cores while intake appends. `paused`:
    names of `processes` stopped (SIGSTOP) from just before the warm-up until the last batch is
    answered, then continued (intake alone: what it takes with the machine to itself)."""
    bodies = batch_events(total)
    processes = {**processes, "bench client": os.getpid()} if processes else {}
    stopped = [processes[name] for name in paused]
    with httpx.Client(timeout=120, headers=headers) as client:
        try:
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)
            client.post(f"{url}/v1/events/batch", content=batch_events(1000)[0],
                        headers={"content-type": "application/json"}).raise_for_status()  # warm-up
            before = {name: cpu_seconds(pid) for name, pid in processes.items()}
            start = time.perf_counter()
            accepted = 0
            for body in bodies:
                r = client.post(f"{url}/v1/events/batch", content=body, headers={"content-type": "application/json"})
                r.raise_for_status()
                accepted += r.json()["accepted"]
            elapsed = time.perf_counter() - start
            cpu = {name: (cpu_seconds(pid) - before[name]) * 1e6 / total for name, pid in processes.items()}
        finally:
            for pid in stopped:
                with contextlib.suppress(ProcessLookupError):  # (gone: nothing to continue)
                    os.kill(pid, signal.SIGCONT)
    assert accepted == total, f"only {accepted} of {total} accepted"
    result = {"events_per_s": total / elapsed, "events": total, "seconds": elapsed}
    if cpu:
        result["cpu_us_per_event"] = dict(sorted(cpu.items(), key=lambda kv: -kv[1]))
        result["cores_busy"] = sum(cpu.values()) * total / 1e6 / elapsed
    return result


def raw_insert_rate(database_url: str, total: int) -> float:
    """Baseline: executemany of event-sized rows into a scratch table of the same database, 1,000 a commit."""
    engine = make_engine(database_url)
    row = {"sequence": 0, "body": "x" * 420, "content_hash": "h" * 64, "chain_hash": "c" * 64,
           "region_code": "513431", "type": "daily_check.recorded"}
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_raw"))
        conn.execute(text("CREATE TABLE bench_raw (sequence BIGINT PRIMARY KEY, body TEXT, content_hash TEXT, "
                          "chain_hash TEXT, region_code TEXT, type TEXT)"))
    start = time.perf_counter()
    for b in range(total // 1000):
        rows = [{**row, "sequence": b * 1000 + i} for i in range(1000)]
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO bench_raw VALUES (:sequence, :body, :content_hash, :chain_hash, "
                              ":region_code, :type)"), rows)
    elapsed = time.perf_counter() - start
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE bench_raw"))
    engine.dispose()
    return total / elapsed


def postgres_database() -> str | None:
    try:
        admin = make_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        name = f"kaohe_bench_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    except Exception as exc:  # noqa: BLE001 - no PostgreSQL is a reason to skip, printed below
        print(f"PostgreSQL not reachable ({str(exc).splitlines()[0]}): PostgreSQL part skipped", flush=True)
        return None


def drop_postgres(url: str) -> None:
    admin = make_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
    admin.dispose()


def measure(wrk: str, name: str, url: str | None, hello: dict, seconds: int, batch_total: int) -> dict:
    """Single POSTs (wrk, 32 connections) and batches on one backend (`url`: PostgreSQL, or None
    for SQLite), the raw-insert baseline on the same database, and the chain verified after."""
    script = str(ROOT / "bench" / "post_event.lua")
    with TemporaryDirectory() as tmp:
        db_url = url or f"sqlite:///{Path(tmp) / 'intake.db'}"
        with Stack(Path(tmp), url) as stack:
            print(f"[{name}] single POST /v1/events, {seconds}s…", flush=True)
            run_wrk(wrk, f"{stack.url}/v1/events", 2, script, stack.headers)  # warm-up
            single = run_wrk(wrk, f"{stack.url}/v1/events", seconds, script, stack.headers)
            print(f"[{name}] batch POST /v1/events/batch, {batch_total} events…", flush=True)
            processes = stack.children(everything=True)
            batch = batch_rate(stack.url, batch_total, stack.headers, processes)
            print(f"[{name}] batch POST /v1/events/batch, the rest of the stack paused, {batch_total} events…",
                  flush=True)
            alone = batch_rate(stack.url, batch_total, stack.headers, processes,
                               paused=[n for n in processes if n != "services.intake"])
            verified = httpx.get(f"{stack.url}/v1/audit/verify", headers=stack.headers,
                                 timeout=300).raise_for_status().json()
        raw = raw_insert_rate(db_url, batch_total)
    return {"single_post": single, "single_ratio_to_hello": single["requests_per_s"] / hello["requests_per_s"],
            "batch": batch, "raw_inserts_per_s": raw, "batch_ratio_to_raw": batch["events_per_s"] / raw,
            "batch_alone": alone, "batch_alone_ratio_to_raw": alone["events_per_s"] / raw,
            "chain_ok": verified["ok"], "events_stored": verified["events_checked"]}


def durations(quick: bool) -> tuple[int, int]:
    """(seconds of each wrk run, events sent in batches)."""
    return (5, 5_000) if quick else (15, 30_000)


def cpu_line(batch: dict) -> str:
    """The batch run's CPU per event by process, largest first (the 1-µs ones left out)."""
    if "cpu_us_per_event" not in batch:
        return ""
    shares = ", ".join(f"{name.removeprefix('services.')} {us:.0f}" for name, us in batch["cpu_us_per_event"].items()
                       if us >= 1)
    return (f"CPU µs/event: {shares} (total {sum(batch['cpu_us_per_event'].values()):.0f}; "
            f"{batch['cores_busy']:.1f} of {os.cpu_count()} cores busy)")


def alone_line(r: dict) -> str:
    """The batches with the rest of the stack paused: intake's rate, its ratio to the raw inserts,
    and intake's CPU per event."""
    a = r["batch_alone"]
    return (f"intake alone (the rest of the stack paused): {a['events_per_s']:,.0f} events/s, "
            f"{r['batch_alone_ratio_to_raw']:.2f} of raw inserts; intake "
            f"{a['cpu_us_per_event']['services.intake']:.0f} µs CPU/event, {a['cores_busy']:.1f} cores busy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    seconds, batch_total = durations(args.quick)
    wrk = ensure_wrk()
    print(f"baseline: FastAPI hello-world, wrk 2 threads × 32 connections, {seconds}s…", flush=True)
    hello = hello_world(wrk, seconds)
    results = {"quick": args.quick, "hello_world": hello, "backends": {}}
    pg = None if args.no_postgres else postgres_database()
    try:
        for name, url in [("sqlite", None)] + ([("postgresql", pg)] if pg else []):
            results["backends"][name] = measure(wrk, name, url, hello, seconds, batch_total)
    finally:
        if pg:
            drop_postgres(pg)

    print()
    print(f"{'figure':<44}{'value':>14}{'baseline':>14}{'ratio':>8}{'target':>8}")
    h = hello["requests_per_s"]
    print(f"{'FastAPI hello-world requests/s':<44}{h:>14,.0f}{'':>30}   p99 {hello['p99_ms']:.1f} ms")
    for name, r in results["backends"].items():
        s, b = r["single_post"], r["batch"]
        print(f"{name + ': POST /v1/events requests/s':<44}{s['requests_per_s']:>14,.0f}{h:>14,.0f}"
              f"{r['single_ratio_to_hello']:>8.2f}{'≥0.15':>8}   p99 {s['p99_ms']:.1f} ms, non-2xx {s['non_2xx']}")
        print(f"{name + ': batch events/s':<44}{b['events_per_s']:>14,.0f}{r['raw_inserts_per_s']:>14,.0f}"
              f"{r['batch_ratio_to_raw']:>8.2f}{'≥0.3':>8}   chain ok: {r['chain_ok']} ({r['events_stored']} events)")
        print(f"{'':<44}{cpu_line(b)}")
        print(f"{'':<44}{alone_line(r)}")
    print("\n(alone: nothing written; `python -m bench` runs every part and writes bench/results.json)")


if __name__ == "__main__":
    main()
