"""The approval page in headless Chromium (Debian's package), driven by Playwright."""

import json
import shutil
import time

import httpx
import pytest

from tests.test_server import KEY, upload, wait_status

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# The machine's network is closed: without these, Chromium keeps trying to reach Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


@pytest.fixture
def browser_page():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


@pytest.mark.parametrize("api_key", [None, KEY], ids=["open", "with-api-key"])
def test_approve_from_the_page_and_see_the_postmortem(live_server, scenario_dir, browser_page, api_key, tmp_path):
    server = live_server(**({"INCIDENT_GRAPH_API_KEY": api_key} if api_key else {}))
    case = scenario_dir("bad_deploy", 31)
    truth = json.loads((case / "truth.json").read_text())
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
        tid = client.post("/incidents", files=upload(case)).json()["thread_id"]
        wait_status(client, tid, {"waiting_for_approval"})

    page = browser_page
    page.goto(server.url)
    if api_key:
        assert "401" in page.locator("#list-note").inner_text(timeout=10_000)
        page.fill("#key", api_key)
        page.dispatch_event("#key", "change")
    page.click(f"li[data-thread='{tid}']", timeout=15_000)
    hypotheses = page.locator("#hypotheses")
    hypotheses.wait_for(timeout=15_000)
    assert truth["root_service"] in hypotheses.locator("tr").nth(1).inner_text()
    assert page.locator("#verdicts tr").count() > 1, "the critic's verdicts are shown"
    assert page.locator("#plan li").count() >= 1
    assert "waiting for approval" in page.locator("#status").inner_text()

    page.click("#approve")
    postmortem = page.locator("#postmortem")
    deadline = time.monotonic() + 60
    while "Root cause" not in (postmortem.inner_text() if postmortem.count() else "") and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    text = postmortem.inner_text()
    assert "Root cause" in text and truth["root_service"] in text
    assert page.locator("#status").inner_text() == "done"
    timeline = page.locator("#timeline")
    timeline.wait_for(timeout=10_000)
    page.wait_for_function("document.getElementById('timeline').naturalWidth > 0", timeout=10_000)
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    with httpx.Client(base_url=server.url, timeout=30, headers=headers) as client:
        approval = client.get(f"/incidents/{tid}/postmortem.json").json()["approval"]
    assert approval["action"] == "approve" and approval["by"] == "web page"
