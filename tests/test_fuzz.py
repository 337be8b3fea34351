"""Schemathesis against every service's OpenAPI, over real HTTP, with every built-in check —
including object_level_authorization between the keys of two prefectures — and one of ours
(tests/fuzz_hooks.py: a key of prefecture B never gets prefecture A's data from any read).

Runs the schemathesis CLI, as an operator would, against the four APIs on SQLite with a little of
both prefectures' data; the fuzzer's own writes add more. Any failure fails the test with the report.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from sqlmodel import Session

from services.intake.app import create_app as intake_app
from services.intake.regions.service import load
from services.kit.settings import Settings
from services.notify.app import create_app as notify_app
from services.ranking.app import create_app as ranking_app
from services.scoring.app import create_app as scoring_app
from tests import factories as f
from tests.conftest import Keys, bearer, fresh_database
from tests.http_helpers import serve
from tests.kit.test_access import A_COUNTY, A_PREF, B_COUNTY, B_PREF, _seed_read_models

pytestmark = pytest.mark.fuzz
EVERYTHING = ["events:write", "events:read", "scores:read", "standings:read", "webhooks:manage", "admin"]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# make chaos (KAOHE_CHAOS=1) fuzzes longer; KAOHE_FUZZ_EXAMPLES wins over both
MAX_EXAMPLES = os.environ.get("KAOHE_FUZZ_EXAMPLES", "200" if os.environ.get("KAOHE_CHAOS") == "1" else "30")


# Operations whose rules go beyond what JSON Schema can say: a schema-valid request may still be
# refused with a 422 naming the field (an unknown county, a time too far ahead, a deadline before
# the visit, policy weights that do not sum to 1, a webhook URL on a private address, ...).
SEMANTIC_422 = ["POST /v1/events", "POST /v1/events/batch", "POST /v1/policies", "POST /v1/keys",
                "POST /v1/webhooks/endpoints", "PATCH /v1/webhooks/endpoints/{endpoint_id}",
                "POST /v1/webhooks/endpoints/{endpoint_id}/replay-failed"]


def _config(auth: Path, urls: dict[str, str]) -> str:
    lines = [f'[auth.wfc]\npath = "{auth}"\npeers = ["prefecture-A", "prefecture-B"]\n']
    # …and every list with a cursor: an opaque cursor must be one the API returned
    paged = {f"{method.upper()} {path}" for url in urls.values()
             for path, ops in httpx.get(f"{url}/openapi.json", timeout=10).json()["paths"].items()
             for method, op in ops.items() if any(p["name"] == "cursor" for p in op.get("parameters", []))}
    for name in sorted(set(SEMANTIC_422) | paged):
        lines.append(f'[[operations]]\ninclude-name = "{name}"\n'
                     'checks.positive_data_acceptance.expected-statuses = '
                     '["2xx", "401", "403", "404", "409", "422", "429"]\n')
    return "\n".join(lines)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, broker) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("fuzz")
    keys = Keys(tmp)
    settings = Settings(data_dir=tmp, kafka_bootstrap_servers=broker.bootstrap_servers, service_token=keys.admin)
    with fresh_database("sqlite", tmp, "intake") as intake_db, \
            fresh_database("sqlite", tmp, "scoring") as scoring_db, \
            fresh_database("sqlite", tmp, "ranking") as ranking_db, \
            fresh_database("sqlite", tmp, "notify") as notify_db:
        with Session(intake_db.engine) as s:
            load(session=s)
            s.commit()
        _seed_read_models(scoring_db.engine, ranking_db.engine)
        apps = {"intake": intake_app(settings, engine=intake_db.engine, access=keys.store),
                "scoring": scoring_app(settings, engine=scoring_db.engine, access=keys.store),
                "ranking": ranking_app(settings, engine=ranking_db.engine, access=keys.store),
                "notify": notify_app(settings, engine=notify_db.engine, access=keys.store)}
        with serve(apps["intake"]) as intake, serve(apps["scoring"]) as scoring, \
                serve(apps["ranking"]) as ranking, serve(apps["notify"]) as notify:
            for county in (A_COUNTY, B_COUNTY):
                r = httpx.post(f"{intake}/v1/events", json=f.inspection(f.finding(), region=county),
                               headers=bearer(keys.admin), timeout=10)
                assert r.status_code == 201, r.text
            tokens = {"prefecture-A": keys.key(EVERYTHING, A_PREF), "prefecture-B": keys.key(EVERYTHING, B_PREF),
                      "province-admin": keys.admin}
            auth = tmp / "wfc-auth.json"
            auth.write_bytes(orjson.dumps({"auth": [
                {"name": name, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {token}"}]}
                for name, token in tokens.items()]}))
            config = tmp / "schemathesis.toml"
            urls = {"intake": intake, "scoring": scoring, "ranking": ranking, "notify": notify}
            config.write_text(_config(auth, urls))
            yield {"urls": urls,
                   "config": config, "tokens": tokens, "tmp": tmp}
    keys.engine.dispose()


@pytest.mark.parametrize("service", ["intake", "scoring", "ranking", "notify"])
def test_schemathesis_finds_nothing(stack, service):
    url = stack["urls"][service]
    report = stack["tmp"] / f"{service}-report"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz_hooks",
           "KAOHE_FUZZ_OTHER_KEY": stack["tokens"]["prefecture-B"], "KAOHE_FUZZ_A_PREFIX": A_PREF[:4],
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [str(SCHEMATHESIS), "--config-file", str(stack["config"]), "run", f"{url}/openapi.json",
            "--checks", "all", "--max-examples", MAX_EXAMPLES, "--seed", "20261121", "--workers", "1",
            "--request-timeout", "10", "--exclude-path", "/v1/standings/stream",  # SSE never ends: tests/ranking
            "--report", "junit", "--report-dir", str(report), "--warnings", "off", "--no-color"]
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-60000:]
    assert "passed" in output.lower() or "no issues found" in output.lower(), output[-3000:]
