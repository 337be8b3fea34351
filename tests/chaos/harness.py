"""The whole pipeline over a real broker and real databases, for the fault-injection scenarios.

Intake's API and its outbox relay, the scoring, ranking and notify workers all run as their own
processes (`python -m ...`, exactly as `make run` starts them), each on its own database (SQLite
files or PostgreSQL schemas); a province-wide webhook endpoint subscribed to critical findings,
standing changes and score thresholds points at a loopback receiver that verifies every delivery.

`Pipeline.check()` measures what a scenario must end with:
- every event intake stored was applied by scoring once, and the scores equal a clean
  recomputation from intake's event store (`assert_matches_clean_recomputation`);
- every standing is the rank of those scores, and ranking holds scoring's latest score of every region;
- the receiver got exactly the notifications that should have been sent: a critical finding for
  every critical finding in intake's store, a rank change for every rank change in ranking's
  history, a threshold crossing for every grade change scoring published; each notification under
  one webhook-id (a re-send of the same webhook-id is the at-least-once contract, counted apart).
"""

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from services.events import registry, topics
from services.intake.store.models import StoredEvent
from services.intake.store.service import export
from services.kit.broker import LocalBroker, free_port
from services.kit.migrate import ROOT
from services.notify.models import ConsumerOffset as NotifyOffset
from services.notify.models import Delivery
from services.notify.notifications import CRITICAL, STANDING, THRESHOLD
from services.ranking.models import CurrentScore, Standing, StandingHistory
from services.ranking.ranks import rank, scopes
from services.scoring import store as scoring_store
from services.scoring.base import Outbox as ScoringOutbox
from services.scoring.models import ScoreRow
from tests import factories as f
from tests.conftest import Database, fresh_database
from tests.e2e.stack import serving
from tests.notify.conftest import fast_settings, make_api
from tests.notify.receiver import Receiver
from tests.scoring.recompute import assert_matches_clean_recomputation

FULL = os.environ.get("KAOHE_CHAOS") == "1"
# ten counties in three prefectures (凉山州, 绵阳市, 广安市), as in the crash and scale-out tests
COUNTIES = ["513431", "513432", "513433", "513434", "510722", "510723", "510726", "511602", "511621", "511622"]
PARTITIONS = 3
WATCHED = [CRITICAL, STANDING, THRESHOLD]
# static membership and short timeouts: a restarted worker rejoins its group in a few seconds
CONSUMER = {"KAOHE_CONSUMER_MAX_POLL_INTERVAL_MS": "3000", "KAOHE_CONSUMER_SESSION_TIMEOUT_MS": "6000"}
NOTIFY = {"KAOHE_NOTIFY_ALLOW_PRIVATE_URLS": "true", "KAOHE_NOTIFY_TIMEOUT_S": "2", "KAOHE_NOTIFY_POLL_MS": "20",
          # retries every 0.5 s for ~10 min: a receiver that is down for a while misses nothing
          "KAOHE_NOTIFY_RETRY_SCHEDULE_S": orjson.dumps([0] + [0.5] * 1200).decode(),
          "KAOHE_NOTIFY_RETRY_JITTER": "0.1", "KAOHE_NOTIFY_TICK_S": "3600"}


class Proc:
    """One service process: started, SIGKILLed, restarted, stopped (SIGTERM)."""

    def __init__(self, name: str, module: str, env: dict[str, str], logs: Path) -> None:
        self.name, self.module, self.env, self.logs = name, module, env, logs
        self.process: subprocess.Popen | None = None
        self.kills = 0

    @property
    def log_path(self) -> Path:
        return self.logs / f"{self.name}.log"

    def start(self) -> "Proc":
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", self.module], env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        return self

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, whatever the process was doing."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.kills += 1

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Check:
    """What the services hold against what they should hold; `lost`/`doubled` are counted."""

    events: int = 0  # stored by intake
    missing_events: int = 0  # stored by intake, not applied by scoring
    stale_scores: int = 0  # regions whose score in ranking is not scoring's latest
    wrong_standings: int = 0  # standings that are not the ranks of the scores
    missing_notifications: int = 0
    extra_notifications: int = 0  # delivered but not expected
    doubled_notifications: int = 0  # one notification delivered under several webhook-ids
    redelivered: int = 0  # the same webhook-id delivered again (at least once)
    notifications: int = 0  # expected
    pending: int = 0  # deliveries not delivered yet
    failed: int = 0  # deliveries given up
    details: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.missing_events + self.stale_scores + self.missing_notifications

    @property
    def doubled(self) -> int:
        return self.doubled_notifications + self.extra_notifications

    @property
    def settled(self) -> bool:
        return (self.events > 0 and not self.lost and not self.doubled and not self.wrong_standings
                and not self.pending and not self.failed)


class Pipeline:
    """Intake (API + relay), scoring, ranking and notify as processes on `broker`; a receiver."""

    def __init__(self, database: Database, tmp_path: Path, access, broker: LocalBroker, *,
                 extra_env: dict[str, str] | None = None) -> None:
        self.intake_db, self.tmp_path, self.access, self.broker = database, tmp_path, access, broker
        self.extra_env = extra_env or {}
        self.stack = ExitStack()
        self.receiver = Receiver()
        self.procs: dict[str, Proc] = {}
        self._expected_critical: tuple[int, set[str]] | None = None

    # ---- set-up ------------------------------------------------------------------------------

    def __enter__(self) -> "Pipeline":
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        backend, tmp = self.intake_db.backend, self.tmp_path
        self.broker.partitions = PARTITIONS  # as make run's broker: a restart creates the topics first
        self.scoring_db = self.stack.enter_context(fresh_database(backend, tmp, "scoring"))
        self.ranking_db = self.stack.enter_context(fresh_database(backend, tmp, "ranking"))
        self.notify_db = self.stack.enter_context(fresh_database(backend, tmp, "notify"))
        settings = fast_settings(tmp, kafka_bootstrap_servers=self.broker.bootstrap_servers)
        for api in make_api(settings, self.notify_db, self.access):  # the endpoint, through notify's API
            secret = api.register(self.receiver.url, headers=api.key("510000"), event_types=WATCHED)["secret"]
            self.receiver.secrets.append(secret)
        port = free_port()
        common = {**{k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL")},
                  "KAOHE_DATA_DIR": str(tmp), "KAFKA_BOOTSTRAP_SERVERS": self.broker.bootstrap_servers,
                  "KAOHE_TOPIC_PARTITIONS": str(PARTITIONS), "KAOHE_INTAKE_PORT": str(port),
                  "KAOHE_INTAKE_URL": f"http://127.0.0.1:{port}", "KAOHE_SERVICE_TOKEN": self.access.admin,
                  "KAOHE_INTAKE_DATABASE_URL": self.intake_db.url, "KAOHE_METRICS_PORT": "0",
                  "KAOHE_ACCESS_LOG": "0", "KAOHE_LOG_LEVEL": "INFO", "KAOHE_LOG_FORMAT": "text",
                  "KAOHE_RELAY_IDLE_MS": "10", **CONSUMER}
        self.base = self.stack.enter_context(serving("services.intake", common, port, tmp / "intake.log"))
        self.http = self.stack.enter_context(httpx.Client(base_url=self.base, headers=self.access.headers,
                                                          timeout=60))
        self.stack.callback(self.stop_all)
        env = {"relay": ("services.intake.relay", {}),
               "scoring": ("services.scoring.worker", {"KAOHE_SCORING_DATABASE_URL": self.scoring_db.url,
                                                       "KAOHE_SCORING_BATCH": "500",
                                                       "KAOHE_CONSUMER_INSTANCE_ID": "scoring-1"}),
               "ranking": ("services.ranking.worker", {"KAOHE_RANKING_DATABASE_URL": self.ranking_db.url,
                                                       "KAOHE_CONSUMER_INSTANCE_ID": "ranking-1"}),
               "notify": ("services.notify.worker", {"KAOHE_NOTIFY_DATABASE_URL": self.notify_db.url,
                                                     "KAOHE_CONSUMER_INSTANCE_ID": "notify-1", **NOTIFY})}
        for name, (module, own) in env.items():
            self.procs[name] = Proc(name, module, {**common, **own, **self.extra_env}, tmp).start()
        self.warm_up()

    def warm_up(self, timeout: float = 60.0) -> None:
        """A first batch through the whole pipeline: every worker has joined its group and stored
        offsets before a scenario's fault (a fault during the first join tests something else)."""
        self.warm_up_events = self.feed(60, batch=60, seed=99)
        took, c = self.wait_settled(time.monotonic(), timeout)
        assert took is not None, (f"the pipeline did not come up within {timeout:.0f}s", c, self.logs())
        with Session(self.notify_db.engine) as s:
            topics_read = set(s.execute(select(NotifyOffset.topic)).scalars())
        assert {topics.INTAKE_EVENTS, topics.SCORING_SCORES} <= topics_read, topics_read

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.process is not None and p.process.poll() is None:
                os.kill(p.process.pid, signal.SIGCONT)  # a frozen process cannot stop
            p.stop()

    def __exit__(self, *exc) -> None:
        self.stack.close()
        self.receiver.close()

    # ---- events ------------------------------------------------------------------------------

    def post(self, events: list[dict]) -> list[dict]:
        r = self.http.post("/v1/events/batch", json={"events": events})
        r.raise_for_status()
        return r.json()["results"]

    def feed(self, total: int, *, batch: int = 500, pause_s: float = 0.0, seed: int = 7,
             after_batch=None, pause_for=None) -> int:
        """Send `total` events (tests/factories.stream) in batches; every one must be accepted.
        Returns how many were sent; `after_batch(i)` runs after each batch, then a pause of
        `pause_for()` (if given) or `pause_s` seconds."""
        sent = 0
        for i, events in enumerate(f.stream(total, COUNTIES, batch=batch, seed=seed)):
            results = self.post(events)
            bad = [r for r in results if r["status"] != "accepted"]
            assert not bad, bad[:3]
            sent += len(events)
            if after_batch is not None:
                after_batch(i)
            pause = pause_for() if pause_for is not None else pause_s
            if pause:
                time.sleep(pause)
        return sent

    # ---- the comparisons ---------------------------------------------------------------------

    def stored_events(self) -> dict[str, bytes]:
        """Every event intake stored, by id (its export: the store of record)."""
        out = {}
        for chunk in export(self.intake_db.engine, after_sequence=0):
            for line in chunk.splitlines():
                out[orjson.loads(line)["event_id"]] = line
        return out

    def expected_critical(self) -> set[str]:
        """Finding ids of every critical finding in intake's store (recomputed when the store grew)."""
        with Session(self.intake_db.engine) as s:
            stored = s.execute(select(func.count()).select_from(StoredEvent)).scalar_one()
        if self._expected_critical is None or self._expected_critical[0] != stored:
            found = set()
            for line in self.stored_events().values():
                e = registry.decode_record(line).event
                if e.type == "inspection.recorded":
                    found |= {x.finding_id for x in e.payload.findings if x.severity.value == "critical"}
            self._expected_critical = (stored, found)
        return self._expected_critical[1]

    def expected_standing_changes(self) -> set[tuple]:
        """Every rank change ranking recorded (history rows moving from one rank to another)."""
        with Session(self.ranking_db.engine) as s:
            rows = s.execute(select(StandingHistory).where(StandingHistory.rank.is_not(None),
                                                           StandingHistory.previous_rank.is_not(None),
                                                           StandingHistory.rank != StandingHistory.previous_rank)
                             ).scalars().all()
        return {(r.region_code, r.scope, r.level, r.league, r.year, _utc(r.at)) for r in rows}

    def expected_thresholds(self) -> set[tuple]:
        """Every grade change scoring published (its score messages with another previous grade)."""
        t = ScoringOutbox.__table__
        with Session(self.scoring_db.engine) as s:
            values = s.execute(select(t.c.value).where(t.c.topic == topics.SCORING_SCORES)).scalars().all()
        out = set()
        for v in values:
            d = orjson.loads(v)
            if d.get("previous_grade") is not None and d["previous_grade"] != d["grade"]:
                out.add((d["region_code"], d["year"], _utc(d["as_of"]), d["previous_grade"], d["grade"], d["cause"],
                         d["previous_total"], d["total"]))
        return out

    def delivered_keys(self) -> dict[tuple, set[str]]:
        """What the receiver got (2xx), each notification's identity → the webhook-ids it came under."""
        out: dict[tuple, set[str]] = {}
        for r in self.receiver.delivered():
            body = r.json
            d = body["data"]
            if body["type"] == CRITICAL:
                key = (CRITICAL, d["finding_id"])
            elif body["type"] == STANDING:
                key = (STANDING, d["region_code"], d["scope"], d["level"], d["league"], d["year"],
                       _utc(d["changed_at"]))
            else:
                # a county may cross the same way twice between two ticks (the same as-of): the
                # event that caused it and the totals tell the two apart
                key = (THRESHOLD, d["region_code"], d["year"], _utc(d["as_of"]), d["previous_grade"], d["grade"],
                       d["cause"], d["previous_total"], d["total"])
            out.setdefault(key, set()).add(r.webhook_id)
        return out

    def check(self) -> Check:
        c = Check()
        with Session(self.intake_db.engine) as s:
            c.events = s.execute(select(func.count()).select_from(StoredEvent)).scalar_one()
        with Session(self.scoring_db.engine) as s:
            applied = scoring_store.applied_count(s)
            scores = {(r.region_code, r.year): r for r in s.execute(select(ScoreRow)).scalars()}
        c.missing_events = max(0, c.events - applied)
        with Session(self.ranking_db.engine) as s:
            current = {(r.region_code, r.year): r.total for r in s.execute(select(CurrentScore)).scalars()}
            standings = {(r.scope, r.level, r.league, r.year, r.region_code): (r.rank, r.total)
                         for r in s.execute(select(Standing)).scalars()}
        c.stale_scores = sum(current.get(k) != r.total for k, r in scores.items()) + len(current.keys() - scores)
        expected = expected_standings(list(scores.values()))
        c.wrong_standings = len(set(expected.items()) ^ set(standings.items()))
        want = ({(CRITICAL, x) for x in self.expected_critical()}
                | {(STANDING, *k) for k in self.expected_standing_changes()}
                | {(THRESHOLD, *k) for k in self.expected_thresholds()})
        got = self.delivered_keys()
        c.notifications = len(want)
        c.missing_notifications = len(want - got.keys())
        c.extra_notifications = len(got.keys() - want)
        c.doubled_notifications = sum(len(ids) > 1 for ids in got.values())
        c.redelivered = len(self.receiver.delivered()) - sum(len(ids) for ids in got.values())
        with Session(self.notify_db.engine) as s:
            by_status = dict(s.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all())
        c.pending, c.failed = by_status.get("pending", 0), by_status.get("failed", 0)
        if c.missing_notifications:
            c.details.append(f"missing e.g. {sorted(want - got.keys(), key=str)[:3]}")
        if c.extra_notifications:
            c.details.append(f"unexpected e.g. {sorted(got.keys() - want, key=str)[:3]}")
        return c

    def wait_settled(self, since: float, timeout: float) -> tuple[float | None, Check]:
        """Seconds from `since` (time.monotonic() at the fault's end) until everything caught up and
        matched (None: not within `timeout`), and the last check."""
        started = time.monotonic()
        while True:
            c = self.check()
            if c.settled:
                return time.monotonic() - since, c
            if time.monotonic() - started > timeout:
                return None, c
            time.sleep(0.5)

    def assert_consistent(self) -> Check:
        """The end of every scenario: a last check after a pause (anything in flight would show),
        the clean recomputation of every score, every verified signature."""
        time.sleep(1.5)
        c = self.check()
        assert c.settled, (c, self.logs())
        assert_matches_clean_recomputation(self.intake_db.engine, self.scoring_db.engine)
        assert all(r.verified_with for r in self.receiver.delivered())
        with Session(self.scoring_db.engine) as s:
            applied = scoring_store.applied_ids(s)
        assert len(applied) == len(set(applied)), "scoring stored an event twice"
        assert set(applied) == set(self.stored_events()), "scoring applied other events than intake stored"
        return c

    def logs(self) -> str:
        return f"logs in {self.tmp_path}"


def expected_standings(rows: list[ScoreRow]) -> dict[tuple, tuple]:
    """Every standing as the rank of the scores, in every scope (as tests/test_scale_out.py checks)."""
    by_scope: dict = {}
    for r in rows:
        for scope in scopes(r.region_code, r.level, r.league or "all", r.year):
            by_scope.setdefault(scope, []).append((r.region_code, r.total, r.grade))
    expected = {}
    for scope, entries in by_scope.items():
        for ranked in rank(entries):
            expected[(scope.scope, scope.level, scope.league, scope.year, ranked.region_code)] = (ranked.rank,
                                                                                              ranked.total)
    return expected


def _utc(value) -> str:
    """A moment as one comparable string (SQLite returns naive UTC datetimes)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return registry.iso_utc(value)


def short_form_on_sqlite(database: Database) -> None:
    """The short forms (make test) run on SQLite only, to stay within the suite's time; make chaos
    (KAOHE_CHAOS=1) runs every scenario on PostgreSQL too."""
    if not FULL and database.backend != "sqlite":
        pytest.skip("short form on SQLite only; KAOHE_CHAOS=1 (make chaos) runs it on PostgreSQL")
