"""KAOHE_REGIONS_FILE: intake's set-up loads a region set of the shipped data's shape instead of Sichuan."""

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlmodel import Session

from bench.regions import national_regions
from services.intake.app import create_app
from services.intake.regions.models import Region
from services.intake.regions.service import regions_file
from services.kit.db import make_engine
from services.kit.settings import Settings
from tests.conftest import bearer

ROOT = Path(__file__).resolve().parents[2]


def _small_set() -> dict:
    """Two provinces of the national set: Hebei (generated) and Sichuan (shipped)."""
    data = national_regions()
    return {**data, "regions": [r for r in data["regions"] if r["code"][:2] in ("13", "51")]}


def _setup(tmp_path: Path, broker, path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "KAOHE_DATA_DIR": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
           "KAOHE_REGIONS_FILE": str(path), "KAOHE_LOG_LEVEL": "WARNING"}
    env.pop("DATABASE_URL", None)
    env.pop("KAOHE_INTAKE_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "services.intake.setup"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.broker
def test_setup_loads_the_file_and_intake_accepts_its_counties(tmp_path, broker, access, clock):
    data = _small_set()
    path = tmp_path / "regions.json"
    path.write_bytes(orjson.dumps(data))
    done = _setup(tmp_path, broker, path)
    assert done.returncode == 0, done.stderr
    counties = [r for r in data["regions"] if r["level"] == "county"]
    engine = make_engine(f"sqlite:///{tmp_path / 'intake.db'}")
    with Session(engine) as s:
        assert s.execute(select(func.count()).select_from(Region)).scalar_one() == len(data["regions"])
        hebei = s.get(Region, counties[0]["code"])
        assert (hebei.parent_code, hebei.status, hebei.baseline_status) == (
            counties[0]["parent_code"], counties[0]["status"], counties[0]["status"])

    settings = Settings(data_dir=tmp_path, kafka_bootstrap_servers=broker.bootstrap_servers,
                        regions_file=path, service_token=access.admin)
    hebei_key = access.key(["admin"], "130000")
    event = {"event_id": "7c1f7a52-7d0e-4a8e-9a51-0c3e5d1b2a01", "type": "daily_check.recorded",
             "schema_version": 1, "occurred_at": "2027-01-09T09:00:00+08:00", "region_code": hebei.code,
             "source": "test", "payload": {"check_id": "RF-1", "kind": "work_log", "items_checked": 5,
                                           "items_failed": 0}}
    with TestClient(create_app(settings, engine=engine, clock=clock), headers=bearer(hebei_key)) as client:
        assert client.post("/v1/events", json=event).status_code == 201
        assert client.get(f"/v1/regions/{hebei.parent_code}").json()["parent"]["code"] == "130000"
    engine.dispose()

    again = _setup(tmp_path, broker, path)  # idempotent: nothing added the second time
    assert again.returncode == 0 and "already loaded" in again.stdout


@pytest.mark.broker
def test_a_bad_file_is_refused_before_anything_is_loaded(tmp_path, broker):
    data = _small_set()
    orphan = next(r for r in data["regions"] if r["level"] == "county")
    orphan["parent_code"] = "139900"  # no such prefecture
    path = tmp_path / "regions.json"
    path.write_bytes(orjson.dumps(data))
    done = _setup(tmp_path, broker, path)
    assert done.returncode != 0 and "needs a prefecture parent" in done.stderr
    assert not (tmp_path / "intake.db").exists()


@pytest.mark.parametrize("breakage, message", [
    (lambda rs: rs[-1].update(status="poor"), "has status 'poor'"),
    (lambda rs: rs[-1].update(code="51343"), "bad or repeated region"),
    (lambda rs: rs.append(dict(rs[-1])), "bad or repeated region"),
    (lambda rs: rs[0].update(parent_code="510000"), "needs no parent"),
])
def test_regions_file_names_what_is_wrong(tmp_path, breakage, message):
    data = _small_set()
    breakage(data["regions"])
    path = tmp_path / "regions.json"
    path.write_bytes(orjson.dumps(data))
    with pytest.raises(ValueError, match=message):
        regions_file(path)
