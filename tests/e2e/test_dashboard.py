"""The dashboard in a real browser (Debian's chromium driven by Playwright) over the whole system
as `make run` starts it, demo data loaded through intake's API: the province overview, drilling
down to a prefecture and a county, and a standing changing live after an event is submitted."""

import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests import factories as f
from tests.conftest import two_provinces_file
from tests.e2e.stack import environment, start, stop, token
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.broker]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"



@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (make install)")
    if not Path(CHROMIUM).exists():
        pytest.skip("no chromium on this machine (make test installs Debian's package where apt-get works)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def test_dashboard_drills_down_and_updates_live(tmp_path, browser):
    env, ports = environment(tmp_path)
    intake, ranking = (f"http://127.0.0.1:{ports[p]}" for p in ("KAOHE_INTAKE_PORT", "KAOHE_RANKING_PORT"))
    year = time.gmtime().tm_year
    proc, out = start(env, timeout=240)  # loads the demo years before it prints the banner
    try:
        admin = {"Authorization": f"Bearer {token(env)}"}

        def ranked():
            r = httpx.get(f"{ranking}/v1/standings", params={"region": "510000", "year": year, "limit": 100},
                          headers=admin, timeout=5)
            return r.status_code == 200 and len(r.json()["items"]) >= 100
        wait_for(ranked, timeout=120, what="the demo's standings", every=0.3)

        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{ranking}/?key={token(env, 'dashboard')}")  # the link make run prints
        page.wait_for_selector("#league-in_poverty tbody tr")
        page.wait_for_selector("#league-exited tbody tr")  # both leagues side by side
        assert page.locator("#prefectures tbody tr").count() == 21
        page.screenshot(path=str(tmp_path / "province.png"))

        page.click("#prefectures a[href='#/prefecture/513400']")
        page.wait_for_selector("#prefecture-rank")
        assert "凉山彝族自治州" in page.inner_text("h1")
        page.click("a[href='#/county/513431']")
        page.wait_for_selector("#county-total")
        assert "昭觉县" in page.inner_text("h1")
        before = page.inner_text("#county-total")
        ranks_before = page.inner_text("#placements")

        # a bad unannounced visit: critical findings lower the score; the page follows over SSE
        findings = [f.finding(severity="critical", indicator="housing", deadline=f"{year}-12-30") for _ in range(6)]
        r = httpx.post(f"{intake}/v1/events", json=f.inspection(*findings, at=f.T0.replace(year=year)), headers=admin,
                       timeout=10)
        assert r.status_code == 201, r.text
        page.wait_for_function("before => document.querySelector('#county-total').innerText !== before",
                               arg=before, timeout=30_000)
        assert float(page.inner_text("#county-total")) < float(before)
        assert page.inner_text("#placements") != ranks_before
        assert not errors, errors
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-county.png"), full_page=True)
        assert (ARTIFACTS / "dashboard-county.png").stat().st_size > 10_000
    finally:
        stop(proc, out)
    assert proc.returncode == 0


def test_dashboard_of_a_store_of_two_provinces(tmp_path, browser):
    """With a regions file of two provinces `make run`'s dashboard key is national: the first page
    lists the provinces, each opens on its own standings, a county's page leads back through its
    province."""
    path, _regions, exited = two_provinces_file(tmp_path)
    env, ports = environment(tmp_path, KAOHE_DEMO="0", KAOHE_REGIONS_FILE=str(path))
    intake, ranking = (f"http://127.0.0.1:{ports[p]}" for p in ("KAOHE_INTAKE_PORT", "KAOHE_RANKING_PORT"))
    proc, out = start(env)
    try:
        admin = {"Authorization": f"Bearer {token(env)}"}
        for county in (exited["code"], f.COUNTY):
            r = httpx.post(f"{intake}/v1/events", json=f.inspection(f.finding(), region=county), headers=admin,
                           timeout=10)
            assert r.status_code == 201, r.text

        def ranked(county: str) -> bool:
            r = httpx.get(f"{ranking}/v1/standings/{county}", params={"year": f.T0.year}, headers=admin, timeout=5)
            return r.status_code == 200 and len(r.json()) == 2
        wait_for(lambda: ranked(exited["code"]) and ranked(f.COUNTY), timeout=60, what="both counties ranked")

        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{ranking}/?key={token(env, 'dashboard')}&year={f.T0.year}")
        page.wait_for_selector("#provinces li")
        assert page.locator("#provinces li").count() == 2 and "130000" in page.inner_text("#provinces")
        page.click("#provinces a[href='#/province/130000']")
        page.wait_for_selector(f"#league-exited tr[data-code='{exited['code']}']")
        assert page.locator("#league-in_poverty tbody tr").count() == 0  # Sichuan's county is not Hebei's
        page.click(f"#league-exited a[href='#/county/{exited['code']}']")
        page.wait_for_selector("#county-total")
        crumbs = page.inner_text("#crumbs")
        assert "全国" in crumbs and exited["name"] in page.inner_text("h1")
        page.click("#crumbs a[href='#/province/130000']")
        page.wait_for_selector(f"#league-exited tr[data-code='{exited['code']}']")
        page.click("#crumbs a[href='#/']")
        page.wait_for_selector("#provinces li")
        assert not errors, errors
    finally:
        stop(proc, out)
    assert proc.returncode == 0
