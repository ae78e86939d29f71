"""Issue 2: a person logs in through the login page in a real browser and reaches JupyterLab."""

from __future__ import annotations

import pytest

from tests.browser import ARTIFACTS, CHROMIUM_ARGS, chromium_path

pytestmark = [pytest.mark.facility, pytest.mark.browser]


@pytest.fixture(scope="module")
def browser():
    path = chromium_path()
    if path is None:
        pytest.fail("Chromium is missing: .ci/run installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def test_browser_login_reaches_jupyterlab(facility, new_user, browser):
    name, password = new_user("browser")
    page = browser.new_page()
    try:
        page.goto(facility.hub_url + "login", timeout=30_000)
        page.fill("input#username_input", name)
        page.fill("input#password_input", password)
        page.click("#login_submit")
        # the hub spawns the default server and sends the browser to JupyterLab
        page.wait_for_url(f"**/user/{name}/lab**", timeout=90_000)
        page.wait_for_selector("#jp-main-dock-panel, .jp-LabShell", timeout=90_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "login-jupyterlab.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
        assert "JupyterLab" in page.title() or page.locator(".jp-LabShell").count() == 1
    finally:
        page.close()
    session = facility.login(name, password)
    session.stop_server()


def test_browser_wrong_password_shows_error(facility, new_user, browser):
    name, password = new_user("browser")
    page = browser.new_page()
    try:
        page.goto(facility.hub_url + "login", timeout=30_000)
        page.fill("input#username_input", name)
        page.fill("input#password_input", password + "-wrong")
        page.click("#login_submit")
        page.wait_for_selector("text=Invalid username or password", timeout=30_000)
        assert "/hub/login" in page.url
    finally:
        page.close()
