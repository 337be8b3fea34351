"""`python -m services.kit.run` (what `make run` does): starts, serves, stops cleanly, keeps data."""

import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text

from services.events import topics
from services.kit.db import make_engine
from tests import factories as f
from tests.conftest import two_provinces_file
from tests.e2e.stack import BACKENDS, database_env, environment, start, stop, token
from tests.kafka_helpers import read_topic

pytestmark = [pytest.mark.e2e, pytest.mark.broker]


def schemas(url: str) -> dict[str, bool]:
    """The schemas holding tables in a PostgreSQL database, each with whether it keeps its own
    migration history (an `alembic_version` table)."""
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT table_schema, bool_or(table_name = 'alembic_version') "
                                 "FROM information_schema.tables "
                                 "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') GROUP BY 1"))
        found = dict(rows.all())
    engine.dispose()
    return found


def children_of(pid) -> list[str]:
    result = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout
    return [line for line in result.splitlines() if f" {pid} " in line and "services." in line]


@pytest.fixture(params=BACKENDS)
def backend(request) -> Iterator[tuple[str, dict[str, str]]]:
    """Each e2e run once on SQLite files and once on a new PostgreSQL database (a schema per service)."""
    with database_env(request.param) as extra:
        yield request.param, extra


def test_run_serves_stops_cleanly_and_keeps_data(tmp_path, backend):
    name, database = backend
    env, ports = environment(tmp_path, KAOHE_DEMO="0", **database)  # the demo data: test_dashboard.py
    intake = f"http://127.0.0.1:{ports['KAOHE_INTAKE_PORT']}"

    proc, out = start(env)
    try:
        assert f"{intake}/docs" in "".join(out)
        assert "none loaded (KAOHE_DEMO=0)" in "".join(out)  # the banner does not claim the demo years
        assert ("(schema intake; every service its own)" in "".join(out)) == (name == "postgresql")
        admin = {"Authorization": f"Bearer {token(env)}"}
        assert token(env) in "".join(out)  # the banner shows the local admin key
        assert httpx.get(f"{intake}/v1/regions/513400", timeout=5).status_code == 401  # no key, no data
        assert httpx.get(f"{intake}/readyz", timeout=5).json()["status"] == "ready"
        assert httpx.get(f"{intake}/v1/regions/513400", headers=admin, timeout=5).json()["name"] == "凉山彝族自治州"
        event = f.inspection(f.finding(), at=f.T0)
        r = httpx.post(f"{intake}/v1/events", json=event, headers=admin, timeout=5)
        assert r.status_code == 201, r.text
        # the relay process publishes it to the local broker
        (message,) = [m for m in read_topic(f"127.0.0.1:{ports['KAOHE_BROKER_PORT']}", topics.INTAKE_EVENTS,
                                            until_ids={event["event_id"]}, timeout=30)]
        assert message.key == b"513431"
        # …and the scoring worker turns it into a score, served by the scoring API
        scoring = f"http://127.0.0.1:{ports['KAOHE_SCORING_PORT']}"
        deadline = time.monotonic() + 60
        while (r := httpx.get(f"{scoring}/v1/scores/513431", params={"year": 2026}, headers=admin,
                              timeout=5)).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.3)
        assert r.json()["components"]["inspections"] < 100 and r.json()["league"] == "in_poverty"
        # …and the ranking worker ranks it, in its prefecture and in the province
        ranking = f"http://127.0.0.1:{ports['KAOHE_RANKING_PORT']}"
        while not (placed := httpx.get(f"{ranking}/v1/standings/513431", params={"year": 2026}, headers=admin,
                                       timeout=5).json()):
            assert time.monotonic() < deadline, "no standing"
            time.sleep(0.3)
        assert {(p["scope"], p["rank"]) for p in placed} == {("513400", 1), ("510000", 1)}
        assert "考核" in httpx.get(f"{ranking}/", timeout=5).text
        # notify runs too; a prefecture can register a (local) webhook endpoint with its key
        notify = f"http://127.0.0.1:{ports['KAOHE_NOTIFY_PORT']}"
        assert httpx.get(f"{notify}/readyz", timeout=5).json()["status"] == "ready"
        endpoint = httpx.post(f"{notify}/v1/webhooks/endpoints", json={"url": "http://127.0.0.1:9/hook"},
                              headers=admin, timeout=5)
        assert endpoint.status_code == 201 and endpoint.json()["secret"].startswith("whsec_"), endpoint.text
    finally:
        tail = stop(proc, out)
    assert proc.returncode == 0, tail
    assert "stopped." in tail
    assert "LeaveGroup request failed" not in tail  # the workers leave their groups quietly (kit.consumer.leave)
    assert not children_of(proc.pid)
    assert (tmp_path / "var" / "intake.db").exists() == (name == "sqlite")
    if name == "postgresql":
        services = ("access", "intake", "scoring", "ranking", "notify")  # each its own schema; nothing in public
        assert schemas(database["DATABASE_URL"]) == dict.fromkeys(services, True)

    proc, out = start(env)  # second start: the data of the first is still there
    try:
        again = httpx.get(f"{intake}/v1/events/{event['event_id']}", headers=admin, timeout=5)
        assert again.status_code == 200 and again.json()["sequence"] == 1
        assert httpx.get(f"{intake}/v1/audit/verify", headers=admin, timeout=5).json()["ok"] is True
    finally:
        stop(proc, out)
    assert proc.returncode == 0

    if name != "sqlite":  # what differs by backend (the province filter) is in tests/intake/test_regions_file.py
        return
    # third start, with a regions file of two provinces: Hebei is added, the local keys are remade
    # for every province (the Sichuan ones revoked), and the workers score and rank Hebei's counties
    # in their own leagues and province
    path, regions, exited = two_provinces_file(tmp_path)
    proc, out = start({**env, "KAOHE_REGIONS_FILE": str(path)})
    try:
        hebei_prefecture = next(r["code"] for r in regions if r["level"] == "prefecture")  # the file's first
        assert hebei_prefecture.startswith("13") and f"/v1/regions/{hebei_prefecture} " in "".join(out)  # try: lines
        national = {"Authorization": f"Bearer {token(env)}"}
        assert httpx.get(f"{intake}/v1/regions/513400", headers=admin, timeout=5).status_code == 401  # revoked
        hebei = f.inspection(f.finding(), region=exited["code"], at=f.T0)
        r = httpx.post(f"{intake}/v1/events", json=hebei, headers=national, timeout=5)
        assert r.status_code == 201, r.text
        deadline = time.monotonic() + 60
        while (r := httpx.get(f"{scoring}/v1/scores/{exited['code']}", params={"year": 2026}, headers=national,
                              timeout=5)).status_code != 200:
            assert time.monotonic() < deadline, r.text
            time.sleep(0.3)
        assert r.json()["league"] == "exited"  # from intake's regions: the workers' key sees Hebei's counties
        while not (placed := httpx.get(f"{ranking}/v1/standings/{exited['code']}", params={"year": 2026},
                                       headers=national, timeout=5).json()):
            assert time.monotonic() < deadline, "no standing"
            time.sleep(0.3)
        assert {(p["scope"], p["rank"]) for p in placed} == {(exited["parent_code"], 1), ("130000", 1)}
        listed = httpx.get(f"{intake}/v1/events", headers=national, timeout=5).json()["items"]
        assert {e["region_code"] for e in listed} == {"513431", exited["code"]}
    finally:
        stop(proc, out)
    assert proc.returncode == 0
