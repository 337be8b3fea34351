"""Two intake API processes (uvicorn, `python -m services.intake`) on one database, written to at
once: one gap-free sequence, one intact hash chain, nothing answered 2xx lost, and an event sent
to both processes stored once."""

import random
import threading
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import httpx
import orjson
import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from services.intake.store.models import StoredEvent
from services.intake.store.service import unpublished
from services.kit.broker import free_port
from tests import factories as f
from tests.e2e.stack import environment, serving

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def intakes(database, access, tmp_path) -> Iterator[list[str]]:
    """Two intake APIs on `database`; their keys are `access`'s (SQLite under tmp_path)."""
    env, _ports = environment(tmp_path, KAOHE_DATA_DIR=str(tmp_path), KAOHE_INTAKE_DATABASE_URL=database.url,
                              KAOHE_LOG_LEVEL="WARNING")
    with ExitStack() as stack:
        yield [stack.enter_context(serving("services.intake", {**env, "KAOHE_INTAKE_PORT": str(port)}, port,
                                           tmp_path / f"intake-{i}.log"))
               for i, port in enumerate((free_port(), free_port()))]


class Sender:
    """POSTs from many threads (one HTTP client each); keeps every answer."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.local = threading.local()
        self.accepted: dict[str, tuple[int, str]] = {}  # event_id → (sequence, the process that took it)
        self.replayed: dict[str, list[int]] = defaultdict(list)  # event_id → sequences answered as duplicate
        self.lock = threading.Lock()

    def post(self, base: str, path: str, body: dict) -> httpx.Response:
        if not hasattr(self.local, "client"):
            self.local.client = httpx.Client(headers=self.headers, timeout=60)
        r = self.local.client.post(f"{base}{path}", json=body)
        assert r.is_success, (r.status_code, r.text)
        return r

    def one(self, base: str, event: dict) -> None:
        r = self.post(base, "/v1/events", event)
        self._record(base, r.json()["event_id"], "accepted" if r.status_code == 201 else "duplicate",
                     r.json()["sequence"])

    def batch(self, base: str, events: list[dict]) -> None:
        r = self.post(base, "/v1/events/batch", {"events": events})
        assert r.json()["rejected"] == 0, r.text
        for item in r.json()["results"]:
            self._record(base, item["event_id"], item["status"], item["sequence"])

    def _record(self, base: str, event_id: str, status: str, sequence: int) -> None:
        with self.lock:
            if status == "accepted":
                assert event_id not in self.accepted, f"{event_id} accepted twice"
                self.accepted[event_id] = (sequence, base)
            else:
                self.replayed[event_id].append(sequence)


def test_two_processes_append_one_chain(intakes, access, database):
    a, b = intakes
    send = Sender(access.headers)
    groups = []  # shuffled below; the jobs of a group are submitted side by side
    for i in range(160):  # single events, alternating between the processes
        groups.append([(send.one, intakes[i % 2], f.daily_check())])
    for i in range(8):  # batches of 20
        groups.append([(send.batch, intakes[i % 2], [f.daily_check() for _ in range(20)])])
    twice: list[str] = []
    for _ in range(40):  # the same event to both processes at once
        event = f.inspection(f.finding())
        twice.append(event["event_id"])
        groups.append([(send.one, a, event), (send.one, b, event)])
    for _ in range(2):  # the same batch to both
        events = [f.daily_check() for _ in range(20)]
        twice += [e["event_id"] for e in events]
        groups.append([(send.batch, a, events), (send.batch, b, events)])

    def ledger(finding_id: str) -> None:  # a finding recorded by one process, reported fixed through the other
        send.one(a, f.inspection(f.finding(finding_id)))
        send.one(b, f.step("rectification.reported", finding_id))

    groups += [[(ledger, f"F-TWO-{i:03d}")] for i in range(20)]
    random.Random(6).shuffle(groups)
    with ThreadPoolExecutor(16) as pool:
        for future in [pool.submit(*job) for group in groups for job in group]:
            future.result()

    n = 160 + 8 * 20 + 40 + 2 * 20 + 20 * 2
    sequences = sorted(seq for seq, _ in send.accepted.values())
    assert sequences == list(range(1, n + 1))  # each accepted event its own number, no gap
    by_process = {base: [seq for seq, where in send.accepted.values() if where == base] for base in intakes}
    assert min(by_process[a]) < max(by_process[b]) and min(by_process[b]) < max(by_process[a])  # interleaved
    assert sorted(send.replayed) == sorted(twice)  # the second copy of each: a duplicate...
    assert all(seqs == [send.accepted[e][0]] for e, seqs in send.replayed.items())  # ...answered with the first's

    for base in intakes:  # both processes see the whole store, chained
        report = httpx.get(f"{base}/v1/audit/verify", headers=access.headers, timeout=60).json()
        assert report["ok"] is True and report["events_checked"] == report["head_sequence"] == n, report
    stored = [orjson.loads(line) for line in
              httpx.get(f"{b}/v1/events/export", headers=access.headers, timeout=60).content.splitlines()]
    assert len(stored) == n  # each event once...
    assert {r["event_id"]: r["sequence"] for r in stored} == {  # ...and nothing answered 2xx is lost
        e: seq for e, (seq, _) in send.accepted.items()}
    with Session(database.engine) as s:  # one row per event, each for the relay to publish once
        assert s.execute(select(func.count()).select_from(StoredEvent)).scalar_one() == n
        assert unpublished(session=s) == n
