"""`python -m services.kit.run` (what `make run` calls): everything on one machine.

Starts the local broker (unless KAFKA_BOOTSTRAP_SERVERS is set), applies migrations, loads the
regions, starts every service process, prints where to look, and on Ctrl-C stops the children
in reverse order. Data lives under KAOHE_DATA_DIR (default ./var) and survives restarts.
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import make_url

from services.kit.access import Access
from services.kit.access.local import file_regions, local_keys, region_of
from services.kit.broker import LocalBroker, free_port
from services.kit.logs import configure
from services.kit.settings import METRICS_PORTS, Settings

log = logging.getLogger("kaohe.run")


@dataclass
class Child:
    name: str
    args: list[str]
    health_url: str | None = None
    process: subprocess.Popen | None = None
    env: dict[str, str] | None = None  # on top of the supervisor's environment


def setup_steps() -> list[list[str]]:
    """Each service's own idempotent set-up (migrations, reference data, topics)."""
    services = ("intake", "scoring", "ranking", "notify")
    return [[sys.executable, "-m", "services.kit.access", "migrate"],
            *([sys.executable, "-m", f"services.{service}.setup"] for service in services)]


def children(settings: Settings) -> list[Child]:
    py = sys.executable
    base = f"http://{settings.host}"
    return [
        Child("intake", [py, "-m", "services.intake"], f"{base}:{settings.intake_port}/healthz"),
        Child("intake-relay", [py, "-m", "services.intake.relay"]),
        Child("scoring", [py, "-m", "services.scoring"], f"{base}:{settings.scoring_port}/healthz"),
        Child("scoring-worker", [py, "-m", "services.scoring.worker"]),
        Child("ranking", [py, "-m", "services.ranking"], f"{base}:{settings.ranking_port}/healthz"),
        Child("ranking-worker", [py, "-m", "services.ranking.worker"]),
        Child("notify", [py, "-m", "services.notify"], f"{base}:{settings.notify_port}/healthz"),
        Child("notify-worker", [py, "-m", "services.notify.worker"]),
    ]


def metrics_ports(settings: Settings) -> dict[str, int]:
    """The worker processes' /metrics ports, one each: the defaults (9101-9104), or from
    KAOHE_METRICS_PORT=N: N, N+1, N+2, N+3; none with 0. A port taken by another program (another
    `make run`) is replaced by a free one, so the banner never points at someone else's."""
    if settings.metrics_port == 0:
        return {}
    ports = {}
    for i, process in enumerate(METRICS_PORTS):
        port = settings.metrics_port_for(process) if settings.metrics_port is None else settings.metrics_port + i
        ports[process] = port if _free(settings.host, port) else free_port()
    return ports


def _free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the metrics server binds: TIME_WAIT is fine
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def wait_healthy(child: Child, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.process and child.process.poll() is not None:
            raise RuntimeError(f"{child.name} exited with {child.process.returncode}")
        try:
            if httpx.get(child.health_url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{child.name} did not become healthy at {child.health_url} within {timeout}s")


def stop_all(procs: list[Child], broker: LocalBroker | None) -> None:
    for child in reversed(procs):
        if child.process and child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    for child in reversed(procs):
        if child.process:
            try:
                child.process.wait(10)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in 10 s; killing it", child.name)
                child.process.kill()
                child.process.wait()
    if broker:
        broker.stop()


def examples(regions: list[dict[str, Any]] | None) -> tuple[str, str]:
    """A province and one of its prefectures for the banner's examples: Sichuan's 凉山州 unless a
    regions file is loaded (`file_regions`; then its first prefecture)."""
    if regions is None:
        return "510000", "513400"
    prefecture = next(r for r in regions if r["level"] == "prefecture")
    return prefecture["parent_code"], prefecture["code"]


def banner(settings: Settings, broker: LocalBroker | None, tokens: dict[str, str],
           metrics: dict[str, int] | None = None, regions: list[dict[str, Any]] | None = None, *,
           demo: bool = True) -> str:
    base = f"http://{settings.host}"
    apis = ", ".join(f":{settings.port(s)}" for s in ("intake", "scoring", "ranking", "notify"))
    workers = ", ".join(f"{name} :{port}" for name, port in (metrics or {}).items()) or "off (KAOHE_METRICS_PORT=0)"
    url, schema = settings.database("intake")
    keys = settings.data_dir / "keys"
    province, prefecture = examples(regions)
    auth = f'-H "Authorization: Bearer $(cat {keys / "admin.key"})"'
    lines = [
        "",
        "Kaohe is running. Ctrl-C stops everything.",
        f"  dashboard       {base}:{settings.ranking_port}/?key={tokens['dashboard']}",
        "                  (standings by league, prefecture and county pages, live; the link carries a read-only key)",
        f"  admin API key   {tokens['admin']}",
        f"                  (saved in {keys / 'admin.key'}; every scope, all regions loaded:"
        " make partner keys with it)",
        f"  intake API      {base}:{settings.intake_port}/docs   (OpenAPI; events, ledger, regions)",
        f"  health          {base}:{settings.intake_port}/readyz",
        f"  event contracts {base}:{settings.intake_port}/asyncapi.json  and /v1/schemas",
        f"  scoring API     {base}:{settings.scoring_port}/docs   (scores, explanations, inspector points)",
        f"  ranking API     {base}:{settings.ranking_port}/docs   (standings, history, SSE stream)",
        f"  broker          {settings.bootstrap_servers}"
        + ("  (local tansu, memory only)" if broker else "  (external Kafka)"),
        f"  intake database {make_url(url).render_as_string(hide_password=True)}"  # no password on a terminal
        + (f"  (schema {schema}; every service its own)" if schema else ""),
        f"  data directory  {settings.data_dir.resolve()}",
        f"  regions         {settings.regions_file} (KAOHE_REGIONS_FILE)" if settings.regions_file else
        "  regions         Sichuan (510000): 21 prefectures, 183 counties",
        f"  notify API      {base}:{settings.notify_port}/docs   (webhook endpoints, deliveries, replays;"
        " docs/notify.md)",
        "                  (this machine may register loopback receivers: KAOHE_NOTIFY_ALLOW_PRIVATE_URLS=1)",
        f"  metrics         {base}:{settings.intake_port}/metrics   (Prometheus; every API on its port: {apis})",
        f"                  workers on {settings.host}: {workers}   (docs/observability.md)",
        "  demo data       two assessment years through intake's API; more, live: make demo RATE=200" if demo else
        "  demo data       none loaded (KAOHE_DEMO=0); some, live: make demo RATE=200",
        "",
        f"  try:  curl -s {auth} {base}:{settings.intake_port}/v1/regions/{prefecture} | python3 -m json.tool",
        f"        curl -s {auth} '{base}:{settings.scoring_port}/v1/scores?parent={prefecture}&year=2026'"
        " | python3 -m json.tool",
        f"        curl -s {auth} '{base}:{settings.ranking_port}/v1/standings?region={province}&year=2026&limit=5'"
        " | python3 -m json.tool",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    configure()
    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stopping = False

    def on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    broker: LocalBroker | None = None
    procs: list[Child] = []
    env = dict(os.environ)
    # one machine: a prefecture trying webhooks locally points them at its own loopback receiver
    env.setdefault("KAOHE_NOTIFY_ALLOW_PRIVATE_URLS", "1")
    # one terminal for every process: no line per request there (KAOHE_ACCESS_LOG=1 make run for them)
    env.setdefault("KAOHE_ACCESS_LOG", "0")
    try:
        if settings.local_broker:
            broker = LocalBroker(settings.broker_port, log_path=settings.data_dir / "broker.log",
                                 partitions=settings.topic_partitions).start()
            env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        # side by side: each step has its own database or schema, and topics are created if missing
        steps = [subprocess.Popen(step, env=env) for step in setup_steps()]
        for step in steps:
            if step.wait() != 0:
                raise subprocess.CalledProcessError(step.returncode, step.args)
        access = Access.from_settings(settings)
        regions = file_regions(settings.regions_file)  # read once: the keys' region, the banner's examples
        tokens = local_keys(access, settings.data_dir, region_of(regions))
        access.engine.dispose()
        env["KAOHE_SERVICE_TOKEN"] = tokens["service"]  # the workers' and the demo loader's key
        ports = metrics_ports(settings)
        # the APIs side by side, then, once every one is healthy, the relays and workers side by
        # side (the workers read intake's regions at start)
        everyone = children(settings)
        for group in ([c for c in everyone if c.health_url], [c for c in everyone if not c.health_url]):
            for child in group:
                if child.name in METRICS_PORTS:  # each worker its own metrics port (0 = off)
                    child.env = {"KAOHE_METRICS_PORT": str(ports.get(child.name, 0))}
                child.process = subprocess.Popen(child.args, env={**env, **(child.env or {})},
                                                 start_new_session=True)
                procs.append(child)
            for child in group:
                if child.health_url:
                    wait_healthy(child)
        demo = os.environ.get("KAOHE_DEMO", "1") != "0"
        if demo:  # through intake's API, like any partner
            subprocess.run([sys.executable, "-m", "services.demo"], env=env, check=True)
        print(banner(settings, broker, tokens, ports, regions, demo=demo), flush=True)
        while not stopping:
            for child in procs:
                if child.process.poll() is not None:
                    log.error("%s exited with %s; stopping everything", child.name, child.process.returncode)
                    return 1
            time.sleep(0.2)
        print("stopping…", flush=True)
        return 0
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        stop_all(procs, broker)
        print("stopped.", flush=True)


if __name__ == "__main__":
    sys.exit(main())
