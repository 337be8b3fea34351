"""Intake serves the contracts it validates with, and accepts every sample."""

from services.events import registry, schemas

# a story in which every sample is valid at its point (F-…-0001: report → rejected → report → verified;
# F-…-0002: disputed → upheld; plus the rest), with copies given fresh event ids where a type repeats
ORDER = [
    "inspection.recorded", "inspector.absence_recorded", "daily_check.recorded", "finding.disputed",
    "finding.upheld", "rectification.reported", "rectification.rejected", "return_risk.flagged",
    "return_risk.cleared", "county.status_changed", "year_end_assessment.recorded",
]


def test_every_sample_is_accepted_in_a_story(client):
    for type_ in ORDER:
        r = client.post("/v1/events", json=schemas.sample(type_, 1))
        assert r.status_code == 201, (type_, r.text)
    again = {**schemas.sample("rectification.reported", 1), "event_id": "11111111-1111-4111-8111-111111111111",
             "occurred_at": "2026-03-26T10:00:00+08:00"}
    assert client.post("/v1/events", json=again).status_code == 201
    verified = {**schemas.sample("rectification.verified", 1), "event_id": "22222222-2222-4222-8222-222222222222",
                "occurred_at": "2026-03-28T10:00:00+08:00"}
    assert client.post("/v1/events", json=verified).status_code == 201
    assert client.get("/v1/findings/513431/F-513431-2026-0001").json()["state"] == "verified"
    assert client.get("/v1/findings/513431/F-513431-2026-0002").json()["state"] == "open"
    disputed = {**schemas.sample("finding.disputed", 1), "event_id": "33333333-3333-4333-8333-333333333333"}
    assert client.post("/v1/events", json=disputed).status_code == 409  # upheld before: final


def test_contract_routes(client):
    listing = client.get("/v1/schemas").json()
    assert {(x["type"], x["schema_version"]) for x in listing} == set(registry.MODELS)
    schema = client.get("/v1/schemas/inspection.recorded", params={"version": 1}).json()
    assert schema == schemas.json_schema("inspection.recorded", 1)
    assert client.get("/v1/schemas/inspection.recorded/sample").json()["type"] == "inspection.recorded"
    assert client.get("/v1/schemas/nope").status_code == 404
    assert client.get("/v1/schemas/inspection.recorded", params={"version": 2}).status_code == 404
    doc = client.get("/asyncapi.json").json()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["channels"]["intakeEvents"]["bindings"]["kafka"]["partitions"] == 6


def test_openapi_and_health(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert "/v1/events/batch" in client.get("/openapi.json").json()["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "cdn." not in docs.text and "/_docs/swagger-ui-bundle.js" in docs.text
    assert client.get("/_docs/swagger-ui-bundle.js").status_code == 200
    assert "cdn." not in client.get("/redoc").text
