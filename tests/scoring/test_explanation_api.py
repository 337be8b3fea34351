"""`GET /v1/scores/{code}/explanation` pages line by line through explanation batches (a write's
lines of one county-year a row), in order, whatever the page size."""

from datetime import datetime, timedelta, timezone

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert
from sqlmodel import Session

from services.scoring.app import create_app as scoring_app
from services.scoring.models import ExplanationBatch, ScoreRow
from tests.conftest import bearer, fresh_database

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=timezone.utc)
BEIJING = timezone(timedelta(hours=8))


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request, tmp_path, settings):
    with fresh_database(request.param, tmp_path, "scoring") as db:
        with Session(db.engine) as s:
            s.execute(insert(ScoreRow), [{
                "region_code": "513431", "year": 2026, "level": "county", "parent_code": "513400",
                "league": "in_poverty", "total": 90.0, "grade": "good", "gated": False,
                "components": '{"inspections": 91.36926147704591, "year_end": null}',
                "policy_id": "default-v1", "cause": "x", "as_of": T0}])
            # batches of 1, 3 and 2 lines of 513431's 2026, with other county-years' rows between them
            n = 0
            for code, year, count in (("513431", 2026, 1), ("513432", 2026, 2), ("513431", 2026, 3),
                                      ("513431", 2025, 1), ("513431", 2026, 2)):
                lines = [("inspections", -float(n + i), "inspections.findings", f"e{n + i}",
                          (T0 + timedelta(hours=n + i)).astimezone(BEIJING)) for i in range(count)]
                n += count
                s.execute(insert(ExplanationBatch), [{"region_code": code, "year": year, "policy_id": "default-v1",
                                                      "lines": orjson.dumps(lines).decode()}])
            s.commit()
        with TestClient(scoring_app(settings, engine=db.engine), headers=bearer(settings.service_token)) as c:
            yield c


def test_pages_of_any_size_give_every_line_once_in_order(api):
    expected = ["e0", "e3", "e4", "e5", "e7", "e8"]  # 513431's 2026 lines
    for limit in (1, 2, 4, 6, 100):
        causes, cursor, pages = [], None, 0
        while True:
            r = api.get("/v1/scores/513431/explanation", params={"year": 2026, "limit": limit,
                                                                 **({"cursor": cursor} if cursor else {})})
            assert r.status_code == 200, r.json()
            page = r.json()
            causes += [line["cause"] for line in page["items"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert causes == expected, limit
        assert pages == -(-len(expected) // limit)
    first = api.get("/v1/scores/513431/explanation", params={"year": 2026}).json()["items"][0]
    # as stored at Beijing time, read in UTC
    assert first == {"component": "inspections", "points": -0.0, "rule": "inspections.findings", "cause": "e0",
                     "policy_version": "default-v1", "at": T0.isoformat()}


def test_a_cursor_this_api_did_not_return_is_a_422(api):
    r = api.get("/v1/scores/513431/explanation", params={"year": 2026, "cursor": "eyJhZnRlciI6IDN9"})  # {"after": 3}
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    assert [e["field"] for e in r.json()["errors"]] == ["cursor"]


def test_components_are_shown_to_four_decimals_as_the_total(api):
    """Stored exactly (a component's explanation lines add up to it); shown as the total is."""
    r = api.get("/v1/scores/513431", params={"year": 2026})
    assert r.status_code == 200 and r.json()["components"] == {"inspections": 91.3693, "year_end": None}
