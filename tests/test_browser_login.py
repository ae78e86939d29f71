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


def test_spawn_form_offers_charge_to_and_charges_the_chosen_group(facility, new_user, browser):
    import requests

    name, password = new_user("chooser")
    admin_token = facility.admin_token()
    api = facility.url + "services/facility/api/"
    headers = {"Authorization": f"token {admin_token}"}
    requests.post(api + "groups", json={"path": "lhcb"}, headers=headers, timeout=30)
    facility.login(name, password)  # first login: joins the default group
    added = requests.put(
        api + f"groups/lhcb/-/members/{name}",
        json={"role": "member"},
        headers=headers,
        timeout=30,
    )
    assert added.status_code == 200, added.text
    page = browser.new_page()
    try:
        page.goto(facility.hub_url + "login", timeout=30_000)
        page.fill("input#username_input", name)
        page.fill("input#password_input", password)
        page.click("#login_submit")
        select = page.locator("select#afhub-charge-to")
        select.wait_for(timeout=60_000)
        assert sorted(select.locator("option").all_inner_texts()) == ["lhcb", "users"]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "spawn-form-charge-to.png"))
        select.select_option("lhcb")
        page.click("input[type=submit], button[type=submit]")
        page.wait_for_url(f"**/user/{name}/lab**", timeout=90_000)
    finally:
        page.close()
    usage = requests.get(api + "groups/lhcb/-/usage", headers=headers, timeout=30)
    assert usage.status_code == 200, usage.text
    assert name in usage.text
    facility.login(name, password).stop_server()
