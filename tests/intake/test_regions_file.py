"""KAOHE_REGIONS_FILE: intake's set-up loads a region set of the shipped data's shape instead of Sichuan."""

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select
from sqlmodel import Session

from services.intake.app import create_app
from services.intake.regions.models import Region
from services.intake.regions.service import load as regions_load
from services.intake.regions.service import regions_file
from services.kit.access.principal import NATIONAL
from services.kit.db import make_engine
from services.kit.settings import Settings
from services.scoring.app import create_app as scoring_app
from services.scoring.models import TeamPoints
from services.scoring.store import save_counties
from tests import factories as f
from tests.conftest import bearer, fresh_database, two_provinces

ROOT = Path(__file__).resolve().parents[2]


def _setup(tmp_path: Path, broker, path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "KAOHE_DATA_DIR": str(tmp_path), "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
           "KAOHE_REGIONS_FILE": str(path), "KAOHE_LOG_LEVEL": "WARNING"}
    env.pop("DATABASE_URL", None)
    env.pop("KAOHE_INTAKE_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "services.intake.setup"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.broker
def test_setup_loads_the_file_and_intake_accepts_its_counties(tmp_path, broker, access, clock):
    data = two_provinces()
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
    data = two_provinces()
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
    (lambda rs: rs[-1].update(code=rs[-1]["code"][:5] + "\u0661"), "bad or repeated region"),  # an Arabic-Indic 1
    (lambda rs: rs.append(dict(rs[-1])), "bad or repeated region"),
    (lambda rs: rs[0].update(parent_code="510000"), "needs no parent"),
])
def test_regions_file_names_what_is_wrong(tmp_path, breakage, message):
    data = two_provinces()
    breakage(data["regions"])
    path = tmp_path / "regions.json"
    path.write_bytes(orjson.dumps(data))
    with pytest.raises(ValueError, match=message):
        regions_file(path)


def test_a_province_key_reads_its_own_province_and_a_national_key_every_one(database, settings, access, clock):
    """With two provinces loaded, each province's key lists, exports and sees the findings of its own
    counties only (a province is a range of county codes, not "every row"); the national scope
    (000000) sees both, and only a national admin makes national keys."""
    data = two_provinces()
    with Session(database.engine) as s:
        regions_load(session=s, data=data)
        s.commit()
    hebei_county = next(r for r in data["regions"] if r["level"] == "county" and r["code"].startswith("13"))
    sichuan_county = f.COUNTY
    national = access.key(["admin"], NATIONAL, name="national admin")
    keys = {"13": access.key(["events:read", "admin"], "130000"), "51": access.key(["events:read", "admin"], "510000")}
    with TestClient(create_app(settings, engine=database.engine, clock=clock)) as client:
        posted = {}
        for prefix, county in (("13", hebei_county["code"]), ("51", sichuan_county)):
            event = f.inspection(f.finding(), f.finding(), region=county)
            answer = client.post("/v1/events", json=event, headers=bearer(national))
            assert answer.status_code == 201, answer.text
            posted[prefix] = event

        def seen(token: str, **params) -> dict[str, set[str]]:
            """Every county named by the event list, the export, the findings ledger and the regions list."""
            auth = bearer(token)
            listed = client.get("/v1/events", params=params, headers=auth)
            export = client.get("/v1/events/export", headers=auth)
            ledger = client.get("/v1/findings", params=params, headers=auth)
            regions = client.get("/v1/regions", params={"level": "county"}, headers=auth)
            for answer in (listed, export, ledger, regions):
                assert answer.status_code == 200, answer.text
            return {"events": {e["region_code"] for e in listed.json()["items"]},
                    "export": {orjson.loads(line)["region_code"] for line in export.text.splitlines()},
                    "findings": {e["region_code"] for e in ledger.json()["items"]},
                    "regions": {r["code"][:2] for r in regions.json()}}

        for prefix, county in (("13", hebei_county["code"]), ("51", sichuan_county)):
            mine = seen(keys[prefix])
            assert mine == {"events": {county}, "export": {county}, "findings": {county}, "regions": {prefix}}, prefix
        everyone = seen(national)
        both = {hebei_county["code"], sichuan_county}
        assert everyone == {"events": both, "export": both, "findings": both, "regions": {"13", "51"}}
        assert seen(national, region_code=NATIONAL)["events"] == both
        assert seen(national, region_code="130000")["findings"] == {hebei_county["code"]}

        # the other province, named outright, is as unknown as a code that does not exist
        for path in ("/v1/events", "/v1/findings"):
            for code in ("130000", hebei_county["code"], NATIONAL):
                assert client.get(path, params={"region_code": code}, headers=bearer(keys["51"])).status_code == 404
        assert client.get(f"/v1/events/{posted['13']['event_id']}", headers=bearer(keys["51"])).status_code == 404
        assert client.get(f"/v1/events/{posted['13']['event_id']}", headers=bearer(national)).status_code == 200

        wide = {"name": "another national key", "scopes": ["events:read"], "region": NATIONAL}
        refused = client.post("/v1/keys", json=wide, headers=bearer(keys["51"]))
        assert refused.status_code == 403 and "outside your key's region" in refused.json()["detail"]
        assert client.post("/v1/keys", json=wide, headers=bearer(national)).status_code == 201
        bad = client.post("/v1/keys", json={**wide, "region": "000001"}, headers=bearer(national))
        assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "region"


def test_what_spans_every_region_needs_a_key_for_every_province_held(database, settings, access, clock, tmp_path):
    """The audit of the whole store (intake), the policy, rebuilds and inspector points (scoring):
    a province's admin key while the store holds that province alone, the national key once it
    holds two."""
    sichuan, national = access.key(["admin"], "510000"), access.key(["admin"], NATIONAL)
    with fresh_database(database.backend, tmp_path, "scoring") as scoring_db:
        with Session(scoring_db.engine) as s:
            s.execute(insert(TeamPoints), [{"team_id": "T-1", "region_code": f.COUNTY, "findings_credited": 1,
                                             "absences": "{}", "as_of": clock()}])
            save_counties(s, [{"code": f.COUNTY, "parent_code": "513400", "baseline_status": "in_poverty"}])
            s.commit()
        with TestClient(create_app(settings, engine=database.engine, clock=clock)) as intake, \
                TestClient(scoring_app(settings, engine=scoring_db.engine)) as scoring:
            calls = ((intake, "GET", "/v1/audit/verify"), (scoring, "POST", "/v1/rebuilds"),
                     (scoring, "GET", "/v1/inspector-points?team_id=T-1"))

            def answers(token: str) -> list[int]:
                return [c.request(method, path, headers=bearer(token)).status_code for c, method, path in calls]

            assert answers(sichuan) == [200, 202, 200] and answers(national) == [200, 202, 200]
            hebei = [r for r in two_provinces()["regions"] if r["code"].startswith("13")]
            with Session(database.engine) as s:
                regions_load(session=s, data={"regions": hebei})
                s.commit()
            with Session(scoring_db.engine) as s:
                save_counties(s, [r for r in hebei if r["level"] == "county"])
                s.commit()
            assert answers(sichuan) == [403, 403, 403]
            refused = intake.get("/v1/audit/verify", headers=bearer(sichuan)).json()
            assert "every province's key (000000)" in refused["detail"] and "510000" in refused["detail"]
            assert answers(national) == [200, 202, 200]
