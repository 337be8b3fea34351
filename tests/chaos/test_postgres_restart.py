"""Chaos: PostgreSQL goes away during a run and comes back.

The whole system as `make run` starts it (intake API and relay, scoring API and worker, ranking API
and worker, notify API and worker: real processes, the local broker) on a PostgreSQL cluster of
this test alone (initdb'd here, on a free port; the machine's shared PostgreSQL is never touched).
Events flow through intake's batch API; the cluster is stopped while the workers are still busy,
held down, and started again. While it is down every API's /readyz answers 503 problem+json and a
write is refused with a 503 problem+json (never a 500); the client retries it, as a partner would.
Afterwards every accepted event is in intake's store exactly once, every score equals a clean
recomputation from that store, and every standing ranks those scores. The supervisor stops
everything if any process dies, so a process that cannot live through the outage fails the test.
"""

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from services.kit.broker import free_port
from services.kit.db import make_engine
from services.ranking.models import Standing
from services.ranking.ranks import rank, scopes
from services.scoring.models import ScoreRow
from tests import factories as f
from tests.chaos import report
from tests.e2e.stack import environment, start, stop, token
from tests.scoring.recompute import assert_matches_clean_recomputation
from tests.test_scale_out import applied, scores_reached_ranking

pytestmark = [pytest.mark.broker, pytest.mark.e2e]
FULL = os.environ.get("KAOHE_CHAOS") == "1"
BIN = Path("/usr/lib/postgresql/15/bin")
COUNTIES = ["513431", "513432", "513433", "510722", "510723", "511602"]
BATCH = 100
TOTAL = 6_000 if FULL else 1_200
OUTAGES = [8.0, 3.0] if FULL else [3.0]  # seconds the cluster stays down, one outage each
CATCH_UP_S = 300 if FULL else 45  # from the cluster's start until everything must be caught up
APIS = ("intake", "scoring", "ranking", "notify")


class PrivatePostgres:
    """A PostgreSQL 15 cluster in a scratch directory, run as the `postgres` user (we may be root)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kaohe-pg-"))
        user = pwd.getpwnam("postgres")
        os.chown(self.dir, user.pw_uid, user.pw_gid)
        self.data, self.port = self.dir / "data", free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/kaohe"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=timeout)

    def create(self) -> "PrivatePostgres":
        self._run(str(BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        self.start()
        admin = make_engine(self.url.replace("/kaohe", "/postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE kaohe"))
        admin.dispose()
        return self

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "-o", options,
                  "start")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass  # not running
        shutil.rmtree(self.dir, ignore_errors=True)


def _skip_reason() -> str | None:
    if not (BIN / "initdb").exists() or not (BIN / "pg_ctl").exists():
        return f"no PostgreSQL 15 binaries in {BIN}; the PostgreSQL restart scenario needs its own cluster"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no `postgres` user to run a private PostgreSQL cluster as"
    if os.geteuid() != 0 or not shutil.which("runuser"):
        return "runuser as root is needed to start a private PostgreSQL cluster as the `postgres` user"
    return None


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    pg = PrivatePostgres()
    try:
        yield pg.create()
    finally:
        pg.destroy()


class Client:
    """A partner sending batches: retries what a 503 refused (and a dropped connection), counts the rest."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        self.refused = 0  # 503 problem+json: "nothing stored, retry"
        self.wrong: list[str] = []  # anything else that is not a success (a 500, a non-problem answer)
        self.stored: set[str] = set()
        self.last = ""  # the last answer that was not a success (for a failure message)

    def send(self, batch: list[dict], deadline: float) -> None:
        todo = batch
        while todo:
            assert time.monotonic() < deadline, f"{len(todo)} events still refused; last answer: {self.last}"
            try:
                r = self.http.post("/v1/events/batch", json={"events": todo})
            except httpx.TransportError as exc:
                self.last = repr(exc)
                time.sleep(0.2)
                continue
            if r.status_code != 200:
                self.last = f"{r.status_code}: {r.text[:300]}"
            if r.status_code == 503:
                self.refused += 1
                if r.headers.get("content-type") != "application/problem+json":
                    self.wrong.append(f"503 without problem+json: {r.text[:200]}")
                time.sleep(float(r.headers.get("Retry-After", "1")) / 4)
                continue
            if r.status_code != 200:
                self.wrong.append(f"{r.status_code} {r.headers.get('content-type')}: {r.text[:300]}")
                time.sleep(0.2)
                continue
            retry = []
            for item, result in zip(todo, r.json()["results"]):
                if result["status"] in ("accepted", "duplicate"):
                    self.stored.add(item["event_id"])
                elif (result.get("problem") or {}).get("status") == 503:
                    self.refused += 1
                    retry.append(item)
                else:
                    self.wrong.append(f"item refused: {result}")
            todo = retry
            if todo:
                time.sleep(0.25)


def _readiness(urls: dict[str, str]) -> dict[str, tuple[int, str | None]]:
    out = {}
    for name, url in urls.items():
        try:
            r = httpx.get(f"{url}/readyz", timeout=5)
            out[name] = (r.status_code, r.headers.get("content-type"))
        except httpx.TransportError as exc:
            out[name] = (0, repr(exc))
    return out


def _export_ids(client: Client) -> Counter:
    r = client.http.get("/v1/events/export", timeout=60)
    r.raise_for_status()
    return Counter(orjson.loads(line)["event_id"] for line in r.content.splitlines() if line.strip())


def test_postgres_goes_away_and_comes_back_nothing_lost_nothing_doubled(private_postgres, tmp_path):
    env, ports = environment(tmp_path, DATABASE_URL=private_postgres.url, KAOHE_DEMO="0", KAOHE_LOG_FORMAT="text",
                             KAOHE_METRICS_PORT="0", KAOHE_RELAY_IDLE_MS="20", KAOHE_SCORING_BATCH="300")
    urls = {name: f"http://127.0.0.1:{ports[f'KAOHE_{name.upper()}_PORT']}" for name in APIS}
    proc, out = start(env, timeout=180)
    engines = {s: make_engine(private_postgres.url, schema=s) for s in ("intake", "scoring", "ranking")}
    client = Client(urls["intake"], token(env, "admin"))
    down_answers: dict[str, set] = {name: set() for name in APIS}
    refused_while_down = []
    recoveries = []
    try:
        batches = list(f.stream(TOTAL, COUNTIES, batch=BATCH, findings=2, seed=11))
        per_outage = len(batches) // (len(OUTAGES) + 1)
        deadline = time.monotonic() + (600 if FULL else 240)
        sent = 0
        for outage, held in enumerate(OUTAGES):
            for i, batch in enumerate(batches[outage * per_outage:(outage + 1) * per_outage - 1]):
                client.send(batch, deadline)
                sent += len(batch)
                if outage == 0 and i == 0:
                    # the outage hits a running system (the workers have their partitions), not a first join
                    while applied(engines["scoring"]) == 0:
                        assert time.monotonic() < deadline and proc.poll() is None, "".join(out)[-4000:]
                        time.sleep(0.2)
            # the workers are still applying what just arrived when the database goes
            private_postgres.stop("fast")
            went = time.monotonic()
            while time.monotonic() - went < held:
                for name, answer in _readiness(urls).items():
                    down_answers[name].add(answer)
                try:
                    r = client.http.post("/v1/events", json=f.inspection(f.finding(), region=COUNTIES[0]))
                    refused_while_down.append((r.status_code, r.headers.get("content-type")))
                except httpx.TransportError as exc:  # the API process is gone: shown by the assertions below
                    refused_while_down.append((0, repr(exc)))
                time.sleep(0.3)
            private_postgres.start()
            back = time.monotonic()
            # the batch refused (or never sent) during the outage, retried by the client, then all is caught up
            client.send(batches[(outage + 1) * per_outage - 1], deadline)
            sent += len(batches[(outage + 1) * per_outage - 1])
            caught_up = _caught_up(client, engines, urls, back + CATCH_UP_S, proc, out)
            recoveries.append(None if caught_up is None else caught_up - back)
            if caught_up is None:
                break  # measured and reported below
        if None not in recoveries:
            for batch in batches[len(OUTAGES) * per_outage:]:
                client.send(batch, deadline)
                sent += len(batch)
            recoveries.append(0.0 if _caught_up(client, engines, urls, deadline, proc, out) else None)
    finally:
        alive = proc.poll() is None
        log = stop(proc, out) if alive else "".join(out)
        (tmp_path / "stack.log").write_text(log)
    assert alive, "a process died and the supervisor stopped everything:\n" + log[-8000:]
    with Session(engines["intake"]) as s:  # the stack is stopped: the store itself
        ids = Counter(str(r) for r in s.execute(text("SELECT event_id FROM event")).scalars())
    accepted = client.stored
    lost = len({e for e in accepted if e not in ids})
    scored = applied(engines["scoring"])
    doubled = sum(n - 1 for n in ids.values() if n > 1) + max(0, scored - len(ids))
    lost += max(0, len(ids) - scored)  # stored but never scored
    report.record("PostgreSQL stopped and started mid-run", "postgresql", sent=sent, lost=lost, doubled=doubled,
                  recovery_s=None if None in recoveries else max(recoveries),
                  note=f"{len(OUTAGES)} outage(s) of {'/'.join(f'{h:.0f}' for h in OUTAGES)} s; "
                       f"{client.refused + len(refused_while_down)} writes refused with 503"
                       + ("" if None not in recoveries else "; NOT caught up"))
    assert not client.wrong, client.wrong[:5]
    assert (lost, doubled) == (0, 0), f"{len(ids)} events stored, {applied} applied by scoring; logs in {tmp_path}"
    assert None not in recoveries
    assert len(accepted) == sent
    # while it was down: every API said not ready (503 problem+json), every write a 503 problem+json
    for name, answers in down_answers.items():
        assert (503, "application/problem+json") in answers, (name, answers, log[-3000:])
        assert all(status in (503, 0) for status, _ in answers), (name, answers)
    assert refused_while_down and set(refused_while_down) == {(503, "application/problem+json")}, refused_while_down
    assert_matches_clean_recomputation(engines["intake"], engines["scoring"])
    assert scores_reached_ranking(engines["scoring"], engines["ranking"])
    _assert_standings_rank_scores(engines["scoring"], engines["ranking"])
    for engine in engines.values():
        engine.dispose()


def _caught_up(client: Client, engines, urls: dict[str, str], deadline: float, proc, out) -> float | None:
    """Wait until every API is ready again, every accepted event is stored once, scored, and ranked;
    returns when (None: not by `deadline`)."""
    while time.monotonic() < deadline:
        assert proc.poll() is None, "a process died and the supervisor stopped everything:\n" + "".join(out)[-8000:]
        try:
            ready = all(status == 200 for status, _ in _readiness(urls).values())
            if ready:
                ids = _export_ids(client)
                if (client.stored <= set(ids) and applied(engines["scoring"]) == len(ids)
                        and scores_reached_ranking(engines["scoring"], engines["ranking"])):
                    return time.monotonic()
        except (httpx.HTTPError, OSError):
            pass
        except Exception as exc:  # noqa: BLE001 - the database may still be coming up: look again
            if "connection" not in str(exc).lower():
                raise
        time.sleep(0.3)
    return None


def _assert_standings_rank_scores(scoring, ranking) -> None:
    with Session(scoring) as s:
        rows = s.execute(select(ScoreRow)).scalars().all()
    by_scope: dict = {}
    for r in rows:
        for scope in scopes(r.region_code, r.level, r.league or "all", r.year):
            by_scope.setdefault(scope, []).append((r.region_code, r.total, r.grade))
    expected = {(scope.scope, scope.level, scope.league, scope.year, ranked.region_code): (ranked.rank, ranked.total)
                for scope, entries in by_scope.items() for ranked in rank(entries)}
    with Session(ranking) as s:
        got = {(r.scope, r.level, r.league, r.year, r.region_code): (r.rank, r.total)
               for r in s.execute(select(Standing)).scalars()}
    assert got == expected and got
