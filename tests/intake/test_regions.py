"""Regions: the shipped Sichuan data and the API."""

from collections import Counter

import pytest

from services.intake.regions.service import shipped_regions


@pytest.fixture(scope="module")
def data():
    return shipped_regions()


def test_shipped_data_is_sichuan_with_official_shape(data):
    regions = data["regions"]
    levels = Counter(r["level"] for r in regions)
    assert levels == {"province": 1, "prefecture": 21, "county": 183}
    codes = [r["code"] for r in regions]
    assert len(codes) == len(set(codes))
    by_code = {r["code"]: r for r in regions}
    assert by_code["510000"]["name"] == "四川省"
    assert by_code["513400"]["name"] == "凉山彝族自治州"
    assert by_code["513401"]["name"] == "西昌市"
    for r in regions:
        assert r["code"].startswith("51") and len(r["code"]) == 6
        if r["level"] == "prefecture":
            assert r["parent_code"] == "510000" and r["code"].endswith("00")
        if r["level"] == "county":
            assert r["parent_code"] == r["code"][:4] + "00"
            assert r["status"] in ("in_poverty", "exited")
            assert (r["exit_year"] is not None) == (r["status"] == "exited")
            assert r["status_basis"] in ("source", "demo")
    assert data["sources"], "the data file must say where it came from"


def test_poverty_facts_add_up(data):
    counties = [r for r in data["regions"] if r["level"] == "county"]
    designated = [r for r in counties if r["poverty_county"]]
    assert len(designated) == 88  # Sichuan's 88 poverty counties, all exited 2017–2020
    assert all(r["status_basis"] == "source" for r in designated)
    assert all((r["exit_year"] or r["real_exit_year"]) in range(2017, 2021) for r in designated)
    # both leagues are populated at the baseline
    assert {r["status"] for r in designated} == {"in_poverty", "exited"}
    # every non-designated county is marked as demo data
    assert all(r["status_basis"] == "demo" for r in counties if not r["poverty_county"])


def test_region_api(client):
    liangshan = client.get("/v1/regions/513400").json()
    assert liangshan["parent"]["code"] == "510000"
    assert len(liangshan["children"]) == 17
    county = client.get("/v1/regions/513431").json()
    assert (county["name"], county["level"], county["parent"]["code"]) == ("昭觉县", "county", "513400")
    assert county["children"] == []
    prefectures = client.get("/v1/regions", params={"level": "prefecture"}).json()
    assert len(prefectures) == 21
    assert len(client.get("/v1/regions", params={"parent": "513400"}).json()) == 17


def test_region_api_errors(client):
    assert client.get("/v1/regions/999999").status_code == 404
    assert client.get("/v1/regions/abc").status_code == 422
    assert client.get("/v1/regions", params={"level": "galaxy"}).status_code == 422
