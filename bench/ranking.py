"""Ranking figures next to baselines measured in the same run (part of `make bench`), on SQLite:

  * freshness: intake accepted → the county's new total readable from the standings API, p50/p99,
    while a background load of about 500 events/s flows (bench.load, its own process; the figure
    reports the rate intake actually accepted); baseline: the broker's own
    produce → consume latency (p99) at the same rate. Target: p99 ≤ 1 s.
  * GET /v1/standings requests/s and p99 (wrk, 32 connections) for a prefecture league and the
    province-wide county ranking (100 a page), against a FastAPI hello-world. Target ≥ 0.3.

Alone, the system is the one `make run` starts, with its demo years loaded (measured once the
demo loader is done). `python -m bench` calls `measure_on()` on its rebuilt national stack instead.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from tempfile import TemporaryDirectory

import httpx
import orjson
from kafka import KafkaConsumer, KafkaProducer

from bench.intake import ROOT, Stack, ensure_wrk, hello_world, run_wrk
from bench.load import daily_check
from services.kit.broker import LocalBroker, free_port
from services.kit.kafka import ensure_topics

YEAR = datetime.now(timezone.utc).year


def total_of(client: httpx.Client, ranking: str, county: str) -> float | None:
    placed = client.get(f"{ranking}/v1/standings/{county}", params={"year": YEAR}).raise_for_status().json()
    return placed[0]["total"] if placed else None


def scored_total(client: httpx.Client, scoring: str, county: str) -> float | None:
    r = client.get(f"{scoring}/v1/scores/{county}", params={"year": YEAR})
    return r.json()["total"] if r.status_code == 200 else None


def moved(read: Callable[[], float | None], before: float | None, since: float, limit: float = 10.0) -> float | None:
    """Seconds from `since` until `read()` differs from `before` (polled every 10 ms), or None
    after `limit` seconds from `since`."""
    while time.monotonic() - since < limit:
        if read() != before:
            return time.monotonic() - since
        time.sleep(0.01)
    return None


def p99(sorted_values: list[float]) -> float:
    return sorted_values[int(0.99 * (len(sorted_values) - 1))]


def freshness(stack: Stack, counties: list[str], rate: float, seconds: float) -> dict:
    """Background daily checks at `rate` events/s (bench.load, its own process); twice a second a
    probe event for a county the background leaves alone, timed from intake's 201 until the
    standings API shows its new total (a probe not shown within 10 s counts as timed out), and on
    the way until the scoring API shows it (the first hop: intake's relay, the broker, the scoring
    worker; the rest is scoring's relay, the broker, the ranking worker)."""
    background, probes = counties[: len(counties) // 2], counties[len(counties) // 2:]
    loader = subprocess.Popen([sys.executable, "-m", "bench.load", stack.url, "--rate", str(rate),
                               "--counties", ",".join(background)], cwd=ROOT, stdout=subprocess.PIPE,
                              env={**os.environ, "KAOHE_BENCH_TOKEN": stack.token})
    latencies: list[float] = []
    scored: list[float] = []  # until the scoring API shows the new total
    timed_out = 0
    try:
        with httpx.Client(timeout=10, headers=stack.headers) as client:
            time.sleep(1)  # the loader's start-up
            end = time.monotonic() + seconds
            for county in probes * 10:
                if time.monotonic() > end:
                    break
                before = total_of(client, stack.ranking_url, county)
                score_before = scored_total(client, stack.scoring_url, county)
                r = client.post(f"{stack.url}/v1/events", json=daily_check(county, 10))
                accepted = time.monotonic()
                assert r.status_code == 201, r.text
                # (the standings follow the score: never before it)
                if (first := moved(lambda: scored_total(client, stack.scoring_url, county), score_before,
                                   accepted)) is not None:
                    scored.append(first)
                shown = moved(lambda: total_of(client, stack.ranking_url, county), before, accepted)
                if shown is None:
                    timed_out += 1
                    shown = 10.0  # at least: counts in the percentiles as a lower bound
                latencies.append(shown)
                time.sleep(max(0.0, 0.5 - (time.monotonic() - accepted)))
    finally:
        loader.send_signal(signal.SIGTERM)
        out, _ = loader.communicate(timeout=60)
    load = json.loads(out.decode().strip().splitlines()[-1])
    latencies.sort()
    scored.sort()
    return {"probes": len(latencies), "probes_timed_out": timed_out,  # timed out: counted as 10 s
            "scored_p50_ms": 1000 * statistics.median(scored) if scored else None,
            "scored_p99_ms": 1000 * p99(scored) if scored else None,
            "background_events_per_s": load["accepted_per_s"], "background_sent": load["sent"],
            "background_refused": load["refused"],
            "p50_ms": 1000 * statistics.median(latencies), "p99_ms": 1000 * p99(latencies),
            "max_ms": 1000 * latencies[-1]}


def broker_latency(rate: float, count: int) -> dict:
    """The broker alone: produce with a timestamp, consume, at `rate` messages/s."""
    with LocalBroker(free_port()) as broker:
        ensure_topics(broker.bootstrap_servers, ["bench.latency"], 6)
        consumer = KafkaConsumer("bench.latency", bootstrap_servers=broker.bootstrap_servers, group_id=None,
                                 auto_offset_reset="latest", fetch_max_wait_ms=10)
        while not consumer.assignment():
            consumer.poll(timeout_ms=100)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all", linger_ms=0)
        latencies: list[float] = []

        def produce() -> None:
            for i in range(count):
                producer.send("bench.latency", key=str(i % 50).encode(), value=orjson.dumps(time.time()))
                time.sleep(1 / rate)
            producer.flush()

        t = threading.Thread(target=produce, daemon=True)
        t.start()
        deadline = time.monotonic() + count / rate + 30
        while len(latencies) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=100).values():
                now = time.time()
                latencies += [now - orjson.loads(m.value) for m in batch]
        t.join()
        producer.close()
        consumer.close()
    latencies.sort()
    return {"messages": len(latencies), "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * p99(latencies)}


def measure_on(stack: Stack, wrk: str, hello: dict, seconds: int, rate: float, fresh_seconds: float) -> dict:
    """Standings reads (wrk, `seconds` each) and freshness (`fresh_seconds` of probes) on a running
    stack whose standings are (being) filled."""
    started = time.monotonic()
    with httpx.Client(timeout=10, headers=stack.headers) as client:
        deadline = time.monotonic() + 240

        def ranked() -> int:
            r = client.get(f"{stack.ranking_url}/v1/standings", params={"region": "510000", "year": YEAR, "limit": 100})
            if r.status_code in (401, 403):  # not a matter of waiting
                r.raise_for_status()
            return len(r.json()["items"]) if r.status_code == 200 else 0

        while ranked() < 100:
            assert time.monotonic() < deadline, "the standings did not appear"
            time.sleep(1)
        counties = [r["code"] for r in client.get(f"{stack.url}/v1/regions", params={"level": "county"})
                    .raise_for_status().json()]
    waited = time.monotonic() - started
    print("standings: prefecture league and province-wide ranking…", flush=True)
    prefecture = run_wrk(wrk, f"{stack.ranking_url}/v1/standings?region=513400&year={YEAR}", seconds,
                         headers=stack.headers)
    province = run_wrk(wrk, f"{stack.ranking_url}/v1/standings?region=510000&year={YEAR}&limit=100", seconds,
                       headers=stack.headers)
    print(f"freshness at {rate:.0f} events/s…", flush=True)
    fresh = freshness(stack, counties, rate, fresh_seconds)
    h = hello["requests_per_s"]
    return {"waited_for_standings_s": round(waited, 1), "standings_prefecture": prefecture,
            "standings_province": province,
            "standings_prefecture_ratio": prefecture["requests_per_s"] / h,
            "standings_province_ratio": province["requests_per_s"] / h, "freshness": fresh}


def broker_baseline(rate: float, seconds: float) -> dict:
    print(f"baseline: broker produce→consume at {rate:.0f}/s…", flush=True)
    return broker_latency(rate, int(rate * seconds))


def measure(wrk: str, hello: dict, seconds: int, rate: float, quick: bool) -> dict:
    """The broker's latency, then the stack with the demo years: standings reads, freshness."""
    broker = broker_baseline(rate, 5 if quick else 10)
    with TemporaryDirectory() as tmp, Stack(Path(tmp), None, demo=True) as stack:
        time.sleep(5 if quick else 10)  # let scoring and ranking finish the demo backlog
        return {"broker_produce_consume": broker,
                **measure_on(stack, wrk, hello, seconds, rate, 10 if quick else 30)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=float, default=500.0)
    args = parser.parse_args()
    seconds = 5 if args.quick else 15
    wrk = ensure_wrk()
    print("baseline: FastAPI hello-world…", flush=True)
    hello = hello_world(wrk, seconds)
    r = measure(wrk, hello, seconds, args.rate, args.quick)
    prefecture, province, fresh, broker = (r["standings_prefecture"], r["standings_province"], r["freshness"],
                                           r["broker_produce_consume"])
    h = hello["requests_per_s"]
    print(f"\n{'figure':<52}{'value':>12}{'baseline':>12}{'ratio':>8}{'target':>10}")
    for name, f in (("standings, prefecture league", prefecture), ("standings, province, 100 a page", province)):
        print(f"{name + ' requests/s':<52}{f['requests_per_s']:>12,.0f}{h:>12,.0f}{f['requests_per_s'] / h:>8.2f}"
              f"{'≥0.3':>10}   p99 {f['p99_ms']:.1f} ms")
    print(f"{'freshness intake→standing p99 ms':<52}{fresh['p99_ms']:>12,.0f}{broker['p99_ms']:>12,.1f}{'':>8}"
          f"{'≤1000':>10}   p50 {fresh['p50_ms']:.0f} ms, {fresh['probes']} probes, "
          f"background {fresh['background_events_per_s']:.0f} events/s ({fresh['background_refused']} not 201)")
    print("\n(alone: nothing written; `python -m bench` runs every part and writes bench/results.json)")


if __name__ == "__main__":
    main()
