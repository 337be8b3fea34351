"""`/v1/policies` without a worker: what a new version may say, and which versions can be listed and
activated (the shipped files and those added over the API)."""

import copy

import pytest
from fastapi.testclient import TestClient

from services.scoring.app import create_app as scoring_app
from tests.conftest import bearer, fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def api(request, tmp_path, settings):
    with fresh_database(request.param, tmp_path, "scoring") as db:
        with TestClient(scoring_app(settings, engine=db.engine), headers=bearer(settings.service_token)) as c:
            yield c


def new_version(api, version: int = 4, **changes) -> dict:
    """The shipped default-v1 as a new version `version`, with `changes` ("section.field": value)."""
    body = copy.deepcopy(api.get("/v1/policies/default-v1").json())
    body.update(id=f"default-v{version}", version=version)
    for path, value in changes.items():
        section, name = path.split(".")
        if value is ...:
            del body[section][name]
        else:
            body[section][name] = value
    return body


def fields(r) -> set[str]:
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json"), r.text
    return {e["field"] for e in r.json()["errors"]}


@pytest.mark.parametrize("changes, named", [
    ({"inspections.households_per_village": -1}, {"inspections.households_per_village"}),
    ({"inspections.households_per_village": True}, {"inspections.households_per_village"}),
    ({"inspections.households_per_village": 2.5}, {"inspections.households_per_village"}),
    ({"inspections.households_per_village": "10"}, {"inspections.households_per_village"}),
    ({"inspections.households_per_village": None}, {"inspections.households_per_village"}),
    ({"rectification.dispute_freezes_overdue": "yes"}, {"rectification.dispute_freezes_overdue"}),
    ({"rectification.dispute_freezes_overdue": 1}, {"rectification.dispute_freezes_overdue"}),
    ({"rectification.dispute_freezes_overdue": None}, {"rectification.dispute_freezes_overdue"}),
    ({"inspections.households_per_village": -10, "rectification.dispute_freezes_overdue": 0},
     {"inspections.households_per_village", "rectification.dispute_freezes_overdue"}),
    ({"daily_management.return_risk_carries_over": "true"}, {"daily_management.return_risk_carries_over"}),
    ({"daily_management.return_risk_carries_over": 0}, {"daily_management.return_risk_carries_over"}),
    ({"daily_management.return_risk_carries_over": None}, {"daily_management.return_risk_carries_over"}),
], ids=lambda v: repr(sorted(v) if isinstance(v, set) else v))  # the same in every xdist process
def test_a_bad_households_per_village_dispute_freeze_or_carry_over_is_a_422_naming_the_field(api, changes, named):
    assert fields(api.post("/v1/policies", json=new_version(api, **changes))) == named
    assert api.get("/v1/policies/default-v4").status_code == 404


@pytest.mark.parametrize("changes, named", [
    ({"rectification.overdue_per_day": "0.5"}, {"rectification.overdue_per_day"}),
    ({"rectification.rejected": True}, {"rectification.rejected"}),
    ({"caps.inspections": "100"}, {"caps.inspections"}),
    ({"inspections.min_households": 50.0}, {"inspections.min_households"}),
    ({"inspections.reference_households": "100"}, {"inspections.reference_households"}),
], ids=lambda v: repr(sorted(v) if isinstance(v, set) else v))  # the same in every xdist process
def test_a_number_given_as_text_a_boolean_or_a_fraction_for_a_count_is_a_422_naming_the_field(api, changes, named):
    """Numbers in a policy are JSON numbers: "0.5" or true was taken as 0.5 or 1, and 50.0 as 50."""
    assert fields(api.post("/v1/policies", json=new_version(api, **changes))) == named
    assert api.get("/v1/policies/default-v4").status_code == 404


def test_a_version_may_set_the_fields_or_leave_them_to_v1s_rules(api):
    r = api.post("/v1/policies", json=new_version(api, 4, **{"inspections.households_per_village": 8,
                                                             "rectification.dispute_freezes_overdue": True,
                                                             "daily_management.return_risk_carries_over": True}))
    assert r.status_code == 201, r.text
    stored = api.get("/v1/policies/default-v4").json()
    assert (stored["inspections"]["households_per_village"], stored["rectification"]["dispute_freezes_overdue"],
            stored["daily_management"]["return_risk_carries_over"]) == (8, True, True)
    # a body from before the fields existed (a partner's saved copy): v1's rules
    r = api.post("/v1/policies", json=new_version(api, 5, **{"inspections.households_per_village": ...,
                                                             "rectification.dispute_freezes_overdue": ...,
                                                             "daily_management.return_risk_carries_over": ...}))
    assert r.status_code == 201, r.text
    stored = api.get("/v1/policies/default-v5").json()
    assert (stored["inspections"]["households_per_village"], stored["rectification"]["dispute_freezes_overdue"],
            stored["daily_management"]["return_risk_carries_over"]) == (0, False, False)


def test_every_shipped_file_is_listed_and_the_configured_one_is_active(api, settings):
    assert settings.scoring_policy == "default-v3"
    listed = api.get("/v1/policies").json()
    assert listed == [{"id": "default-v1", "source": "shipped", "active": False, "configured": False},
                      {"id": "default-v2", "source": "shipped", "active": False, "configured": False},
                      {"id": "default-v3", "source": "shipped", "active": True, "configured": True}]
    assert api.get("/v1/policies/default-v1").json()["version"] == 1


def test_a_shipped_file_other_than_the_configured_one_cannot_be_activated_over_the_api(api):
    """default-v1 is chosen with KAOHE_SCORING_POLICY (or added as a new version), not activated: a
    shipped file activated over the API would stay active whatever the services are configured with."""
    r = api.post("/v1/policies/default-v1/activate")
    assert r.status_code == 409 and "KAOHE_SCORING_POLICY" in r.json()["detail"]
    assert [p["id"] for p in api.get("/v1/policies").json() if p["active"]] == ["default-v3"]
    # a version added over the API can be, and the configured shipped file takes over again when activated
    assert api.post("/v1/policies", json=new_version(api, 4)).status_code == 201
    assert api.post("/v1/policies/default-v4/activate").status_code == 202
    assert [p["id"] for p in api.get("/v1/policies").json() if p["active"]] == ["default-v4"]
    assert api.post("/v1/policies/default-v1/activate").status_code == 409
    assert api.post("/v1/policies/default-v2/activate").status_code == 409
    assert api.post("/v1/policies/default-v3/activate").status_code == 202
    assert [p["id"] for p in api.get("/v1/policies").json() if p["active"]] == ["default-v3"]
    # and a shipped id cannot be added over the API
    assert api.post("/v1/policies", json=new_version(api, 2)).status_code == 409


def test_a_service_configured_with_default_v1_lists_it_as_active(tmp_path, access):
    from services.kit.settings import Settings

    settings = Settings(data_dir=tmp_path, service_token=access.admin, scoring_policy="default-v1")
    with fresh_database("sqlite", tmp_path, "scoring") as db:
        with TestClient(scoring_app(settings, engine=db.engine), headers=bearer(settings.service_token)) as c:
            assert [p["id"] for p in c.get("/v1/policies").json() if p["active"]] == ["default-v1"]
            assert c.post("/v1/policies/default-v2/activate").status_code == 409
