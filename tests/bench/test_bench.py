"""The benchmark harness itself (`make bench`): the national region set, the figures' verdicts,
and `python -m bench` on tiny counts writing a complete bench/results.json."""

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from bench import intake, rebuild, scoring
from bench.__main__ import figure, figures, table
from bench.regions import PROVINCES, national_regions
from services.intake.regions.service import regions_file, shipped_regions
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def test_national_regions_have_the_country_s_shape(tmp_path):
    data = national_regions()
    regions = data["regions"]
    levels = Counter(r["level"] for r in regions)
    assert levels["province"] == 31 and levels["prefecture"] == 333
    assert 2_800 <= levels["county"] <= 2_900
    by_code = {r["code"]: r for r in regions}
    assert len(by_code) == len(regions)
    assert {c[:2] for c in by_code if c.endswith("0000")} == set(PROVINCES)
    for r in regions:
        code = r["code"]
        if r["level"] == "prefecture":
            assert code[4:] == "00" and code[2:4] != "00" and r["parent_code"] == code[:2] + "0000"
        if r["level"] == "county":
            assert code[4:] != "00" and r["parent_code"] == code[:4] + "00"
            assert r["status"] in ("in_poverty", "exited")
    statuses = Counter(r["status"] for r in regions if r["level"] == "county")
    assert statuses["exited"] > 300 and statuses["in_poverty"] > 1_500  # both leagues populated
    sichuan = [r for r in regions if r["code"].startswith("51")]
    assert sichuan == shipped_regions()["regions"]  # the real data, as shipped
    assert national_regions() == data  # deterministic

    path = tmp_path / "national.json"
    path.write_bytes(json.dumps(data, ensure_ascii=False).encode())
    assert regions_file(path)["regions"] == regions  # what intake's set-up accepts


def test_a_figure_is_judged_against_its_target():
    ratio_met = figure("sqlite", "x", 300.0, "events/s", baseline=1000.0, target=("ratio", "≥", 0.3))
    assert ratio_met["ratio"] == pytest.approx(0.3) and ratio_met["met"]
    assert not figure("sqlite", "x", 299.0, "events/s", baseline=1000.0, target=("ratio", "≥", 0.3))["met"]
    assert figure("sqlite", "p99", 999.0, "ms", baseline=10.0, target=("value", "≤", 1000))["met"]
    assert not figure("sqlite", "peak", 301.0, "MB", target=("value", "≤", 300))["met"]


def test_standings_and_freshness_are_figures_of_each_backend_they_were_measured_on():
    """The system part runs on SQLite, then with every service on PostgreSQL: its standings and
    freshness figures are each backend's, judged on their own."""
    standings = {"requests_per_s": 400.0, "p99_ms": 90.0}
    fresh = {"p99_ms": 700.0, "p50_ms": 300.0, "probes": 40, "probes_timed_out": 0, "background_events_per_s": 480.0}
    side = {"freshness": fresh, "standings_prefecture": standings, "standings_province": standings}
    raw = {"hello_world": {"requests_per_s": 1000.0},
           "ranking": {"broker_produce_consume": {"p99_ms": 12.0}, "sqlite": side,
                       "postgresql": {**side, "freshness": {**fresh, "p99_ms": 1200.0}}}}
    rows = figures(raw)
    assert [(r["backend"], r["figure"].split(",")[0].split(" intake")[0], r["met"]) for r in rows] == [
        ("sqlite", "freshness", True), ("sqlite", "standings", True), ("sqlite", "standings", True),
        ("postgresql", "freshness", False), ("postgresql", "standings", True), ("postgresql", "standings", True)]
    assert "== postgresql ==" in table(rows)
    assert figures({**raw, "ranking": {"broker_produce_consume": {"p99_ms": 12.0}}}) == []  # not measured: no row


def test_bench_writes_results_json(tmp_path):
    """`python -m bench` (the scoring part, tiny): one table, and a results.json with every field."""
    out = tmp_path / "results.json"
    env = {**os.environ, "KAOHE_LOG_LEVEL": "WARNING"}
    done = subprocess.run([sys.executable, "-m", "bench", "--tiny", "--only", "scoring", "--output", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "== sqlite ==" in done.stdout and "scoring worker events/s" in done.stdout
    r = json.loads(out.read_text())
    assert re.fullmatch(r"[0-9a-f]{40}", r["commit"]) and isinstance(r["dirty"], bool)
    assert r["mode"] == "tiny" and r["date"] and r["wall_s"] > 0
    m = r["machine"]
    assert m["cores"] >= 1 and m["ram_gib"] > 0 and m["python"] and m["os"] and m["broker"].startswith("tansu")
    assert "postgresql" in m  # its version, or None where none answers
    (row,) = r["figures"]
    scoring = r["raw"]["scoring"]
    assert scoring["events"] == 600 and scoring["counties"] > 2_800
    sqlite = scoring["sqlite"]
    assert sqlite["processes"] == 1 and sqlite["events"] == 600  # the worker as deployed, every event applied
    assert row["value"] == sqlite["events_per_s"] > 0
    assert row["ratio"] == pytest.approx(row["value"] / sqlite["raw_consume_per_s"])
    # the baseline parses with json.loads (issue 3); the orjson read is reported next to it
    assert len(sqlite["raw_consume_orjson_passes"]) == len(sqlite["raw_consume_passes"]) == 5
    assert sqlite["ratio_to_raw_orjson"] == pytest.approx(row["value"] / sqlite["raw_consume_orjson_per_s"])
    assert "orjson.loads" in row["detail"] and f"relays {sqlite['relay_cores']:.2f} cores" in row["detail"]
    assert row["met"] == (row["ratio"] >= 0.4) and row["target"] == {"of": "ratio", "op": "≥", "bound": 0.4}
    # the worker kept the claims it had when let go (no rebalance while timed)
    assert sqlite["rebalanced"] is False and sqlite["produce_s"] >= 0 and "REBALANCED" not in row["detail"]


def test_the_scoring_detail_says_when_the_group_rebalanced_while_timed():
    r = {"worker_cores": 0.9, "worker_cpu_us_per_event": 30, "writer_cores": 0.2, "writer_cpu_us_per_event": 8,
         "relay_cores": 0.2, "relay_cpu_us_per_event": 8, "broker_cpu_us_per_event": 2, "machine_cores_busy": 1.5,
         "machine_cores": 2, "produce_s": 12.3, "rebalanced": False}
    assert "REBALANCED" not in scoring.detail(r)
    assert scoring.detail({**r, "rebalanced": True}).endswith(
        "busy; THE GROUP REBALANCED while timed (events produced in 12.3 s, the workers stopped meanwhile): "
        "this figure counts a rejoin")


@pytest.mark.e2e
def test_rebuild_part_on_a_tiny_store():
    """Fill intake's store, start the stack, read the export, rebuild, read each worker's peak memory."""
    r = rebuild.measure(600)
    assert r["fill"]["events"] == r["export"]["events"] == r["rebuild"]["events"] == 600
    assert r["rebuild"]["events_per_s"] > 0 and r["export"]["events_per_s"] > 0
    assert set(r["peak_rss_mb"]) == set(rebuild.WORKERS)
    assert all(20 < mb < 2_000 for mb in r["peak_rss_mb"].values())
    rows = figures({"rebuild": {"sqlite": r}})
    assert [row["figure"] for row in rows][0] == "rebuild all scores from 600 events, events/s"
    assert len(rows) == 1 + len(rebuild.WORKERS) and "peak memory" in table(rows)


def test_cpu_seconds_count_this_process_and_nothing_for_a_gone_one():
    before = intake.cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:
        pass
    assert intake.cpu_seconds(os.getpid()) - before >= 0.2
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert intake.cpu_seconds(int(gone.stdout)) == 0.0


@pytest.mark.e2e
def test_batch_rate_reports_the_cpu_of_every_process_of_the_stack(tmp_path):
    """The batch figure comes with each process's CPU per event: intake, its relay, the workers,
    the broker and the bench client itself."""
    with intake.Stack(tmp_path, None) as stack:
        processes = stack.children(everything=True)
        r = intake.batch_rate(stack.url, 2_000, stack.headers, processes)
    cpu = r["cpu_us_per_event"]
    assert set(cpu) == {*processes, "bench client"}
    assert {"services.intake", "services.intake.relay", "services.scoring.worker", "tansu"} <= set(cpu)
    assert cpu["services.intake"] > 0 and all(us >= 0 for us in cpu.values())
    assert list(cpu.values()) == sorted(cpu.values(), reverse=True)
    assert r["cores_busy"] == pytest.approx(sum(cpu.values()) * 2_000 / 1e6 / r["seconds"])
    line = intake.cpu_line(r)
    assert line.startswith("CPU µs/event: ") and f"intake {cpu['services.intake']:.0f}" in line
    assert f"total {sum(cpu.values()):.0f}" in line


@pytest.mark.e2e
def test_batch_rate_with_the_rest_of_the_stack_paused_measures_intake_alone_and_lets_the_rest_go(tmp_path):
    """Intake alone: every other process of the stack stopped while the batches are taken (they
    spend nothing meanwhile), then continued: what intake accepted reaches scoring."""
    with intake.Stack(tmp_path, None) as stack:
        processes = stack.children(everything=True)
        others = [name for name in processes if name != "services.intake"]
        r = intake.batch_rate(stack.url, 2_000, stack.headers, processes, paused=others)
        cpu = r["cpu_us_per_event"]
        assert cpu["services.intake"] > 0
        assert all(cpu[name] == 0 for name in others), cpu
        for pid in processes.values():
            assert Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T"  # continued
        with httpx.Client(base_url=stack.scoring_url, headers=stack.headers, timeout=10) as client:
            wait_for(lambda: client.get(f"/v1/scores/{intake.COUNTIES[0]}", params={"year": 2026}).status_code == 200,
                     60, "the paused stack to score what intake took")
    line = intake.alone_line({"batch_alone": r, "batch_alone_ratio_to_raw": 0.1})
    assert line.startswith(f"intake alone (the rest of the stack paused): {r['events_per_s']:,.0f} events/s, 0.10 of")


@pytest.mark.e2e
def test_scale_out_part_runs_worker_processes_that_share_the_partitions():
    """`make bench`'s scale-out part (tiny): one and two scoring worker processes in one group on
    PostgreSQL each apply every event; the line under the table gives two's speed-up over one."""
    r = scoring.scale_out(600, 5000)
    if r is None:
        pytest.skip("no PostgreSQL reachable at 127.0.0.1:5432: make bench runs its scale-out part there only")
    assert list(r) == ["1", "2"]
    for n, figures_ in r.items():
        assert figures_["processes"] == int(n) and figures_["events"] == 600  # (it raises unless all applied)
        assert figures_["events_per_s"] == pytest.approx(600 / figures_["seconds"])
        assert figures_["worker_cores"] > 0 and 0 < figures_["machine_cores_busy"] <= figures_["machine_cores"] + 0.5
    line = scoring.scale_out_line(r)
    assert line.startswith("600 events: 1 worker process ")
    assert f"2 worker processes {r['2']['events_per_s']:,.0f} events/s, " \
           f"{r['2']['events_per_s'] / r['1']['events_per_s']:.2f}x one" in line
    assert scoring.scale_out_line(None) is None
