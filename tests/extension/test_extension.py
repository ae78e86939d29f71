"""Issue 14, Build 2: the server extension (``/afhub/api/...`` in a person's server) and its
notice in JupyterLab, against one real local facility.

alice's server is charged to ``lab14`` (``charge_to``), bob's to his default group. The
handlers answer alice with her own facts, refuse bob (his token, his server's token, his
cookie), no credentials and a forged token, pass the services' 4xx through, and answer 503
with a sentence while the facility API is down. In headless Chromium, Lab shows the quota
left of ``lab14``, then the stop warning with its time once the CLI sets a tiny budget.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from datetime import datetime
from urllib.parse import urljoin

import psutil
import pytest
import requests

from tests.browser import ARTIFACTS, CHROMIUM_ARGS, chromium_path
from tests.facility import PROJECT_ROOT, Facility, run_in_kernel

pytestmark = [pytest.mark.facility, pytest.mark.slow]

GROUP = "lab14"
BUDGET = 50.0
ENDPOINTS = ("quota", "fits", "contributions")
DOCS_SCREENSHOTS = PROJECT_ROOT / "docs" / "screenshots"


@pytest.fixture(scope="module")
def fac(tmp_path_factory):
    facility = Facility(
        tmp_path_factory.mktemp("extension-facility"),
        # budgets checked every second; the stop comes 3 minutes after the warning
        env={"AFHUB_CHECKPOINT_INTERVAL": "1", "AFHUB_GRACE_PERIOD": "180"},
    )
    facility.start()
    yield facility
    facility.stop()
    facility.cleanup_orphans()


class Person:
    def __init__(self, fac: Facility, name: str, charge_to: str | None = None):
        self.name = name
        self.password = fac.add_user(name)
        self.session = fac.login(name, self.password)
        self.charge_to = charge_to
        self.token = self.session.new_token("extension tests")
        self.server = urljoin(fac.url, f"user/{name}/")

    def start(self) -> None:
        self.session.start_server(options={"charge_to": self.charge_to} if self.charge_to else {})
        code = "import os; print(os.environ['JUPYTERHUB_API_TOKEN'])"
        self.server_token = run_in_kernel(
            self.session.facility.url, self.name, self.token, code
        ).strip()

    def get(self, endpoint: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {token}"} if token else {}
        return requests.get(
            self.server + "afhub/api/" + endpoint,
            headers=headers,
            timeout=60,
            allow_redirects=False,
            **kwargs,
        )


@pytest.fixture(scope="module")
def people(fac):
    admin = {"Authorization": f"token {fac.admin_token()}"}
    api = fac.url + "services/facility/api/"
    created = requests.post(api + "groups", json={"path": GROUP}, headers=admin, timeout=30)
    assert created.status_code == 201, created.text
    quota = requests.put(
        api + f"groups/{GROUP}/-/quota", json={"cpu_core_hours": BUDGET}, headers=admin, timeout=30
    )
    assert quota.status_code == 200, quota.text
    alice = Person(fac, "alice-ext", charge_to=GROUP)
    added = requests.put(
        api + f"groups/{GROUP}/-/members/{alice.name}",
        json={"role": "member"},
        headers=admin,
        timeout=30,
    )
    assert added.status_code == 200, added.text
    bob = Person(fac, "bob-ext")
    alice.start()
    bob.start()
    return alice, bob


def test_quota_says_which_group_pays_and_what_is_left(people):
    alice, _bob = people
    for token in (alice.token, alice.server_token):
        response = alice.get("quota", token)
        assert response.status_code == 200, response.text
        quota = response.json()
        assert quota["user"] == alice.name
        assert quota["charged_group"] == GROUP  # set by the hub at admission, not the default
        assert quota["default_group"] != GROUP
        budget = next(row for row in quota["limits"] if row["limit"] == "cpu_core_hours")
        assert budget["group"] == GROUP
        assert budget["limit_value"] == BUDGET
        assert 0 <= BUDGET - budget["left"] == pytest.approx(budget["used"], abs=1e-3)
        assert budget["resets_at"]
        assert quota["headline"].startswith(f"afhub: {GROUP}: ")
        assert "CPU core-hours left" in quota["headline"]
        assert quota["stop"] is None


def test_server_token_holds_only_what_the_extension_needs(fac, people):
    alice, _bob = people
    hub = {"Authorization": f"token {alice.server_token}"}
    model = requests.get(fac.api_url + "user", headers=hub, timeout=30).json()
    assert "access:services!service=facility" in model["scopes"]
    # service access, and what concerns alice herself; nothing on other users or groups
    for scope in model["scopes"]:
        assert scope.startswith("access:") or scope.endswith(f"!user={alice.name}"), scope
    assert requests.get(fac.api_url + "users", headers=hub, timeout=30).status_code == 403


def test_fits_are_the_callers_own(fac, people):
    alice, _bob = people
    response = alice.get("fits", alice.token)
    assert response.status_code == 200, response.text
    direct = requests.get(
        fac.url + "services/fitting/api/jobs",
        headers={"Authorization": f"token {alice.server_token}"},
        timeout=30,
    )
    assert response.json() == direct.json()
    bad = alice.get("fits", alice.token, params={"state": "<b>nope</b>"})
    assert bad.status_code == 400
    assert "state must be one of" in bad.json()["error"]


def test_contributions_pass_the_services_answer_through(fac, people):
    alice, _bob = people
    response = alice.get("contributions", alice.token)
    direct = requests.get(
        fac.url + "services/facility/api/contributions",
        headers={"Authorization": f"token {alice.server_token}"},
        timeout=30,
    )
    # alice is no provider's contact: the facility API's 403 and its sentence, unchanged
    assert direct.status_code == 403, direct.text
    assert response.status_code == 403, response.text
    assert response.json()["error"] == direct.json()["error"]
    assert "contacts of a resource provider" in response.json()["error"]
    bad = alice.get("contributions", alice.token, params={"period": "<script>"})
    assert bad.status_code == 400, bad.text


def test_unknown_query_argument_is_a_400_that_says_which(people):
    alice, _bob = people
    response = alice.get("quota", alice.token, params={"group": "other"})
    assert response.status_code == 400
    assert "unknown query argument(s): group" in response.json()["error"]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_nobody_else_reaches_a_persons_handlers(people, endpoint):
    alice, bob = people
    for token in (bob.token, bob.server_token, "forged-" + alice.token[7:], None):
        response = alice.get(endpoint, token)
        assert response.status_code in (302, 401, 403), (token, response.status_code)
        assert alice.name not in response.text or response.status_code == 302
        assert GROUP not in response.text
    # bob's browser session: the hub refuses him OAuth for alice's server
    response = bob.session.get(alice.server + "afhub/api/" + endpoint, timeout=60)
    assert response.status_code == 403
    assert GROUP not in response.text


def _wait_for_stop_warning(fac: Facility, alice: Person, timeout: float = 60) -> dict:
    me = fac.url + "services/facility/api/users/me"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        warnings = requests.get(
            me, headers={"Authorization": f"token {alice.token}"}, timeout=30
        ).json()["warnings"]
        if warnings:
            return warnings[0]
        time.sleep(1)
    raise AssertionError("no budget warning after the budget was spent")


def _shot(page, name: str) -> None:
    """A screenshot kept in test-artifacts/, and in docs/screenshots/ with
    ``AFHUB_SCREENSHOTS=1`` (docs/extension.md shows them)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"extension-{name}.png"))
    if os.environ.get("AFHUB_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_SCREENSHOTS / f"extension-{name}.png"))


@pytest.mark.browser
def test_lab_shows_the_quota_then_the_stop_warning(fac, people):
    path = chromium_path()
    if path is None:
        pytest.fail("Chromium is missing: .ci/run installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    alice, _bob = people
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            page.goto(fac.hub_url + "login", timeout=30_000)
            page.fill("input#username_input", alice.name)
            page.fill("input#password_input", alice.password)
            page.click("#login_submit")
            page.wait_for_url(f"**/user/{alice.name}/lab**", timeout=90_000)
            item = page.locator("#afhub-quota")
            item.wait_for(timeout=90_000)
            page.wait_for_function(
                "() => document.querySelector('#afhub-quota').textContent.includes('left')",
                timeout=30_000,
            )
            text = item.text_content()
            assert re.fullmatch(
                rf"afhub: {GROUP}: [0-9.]+ of {BUDGET:g} CPU core-hours left", text
            ), text
            _shot(page, "lab-quota")

            fac.afhub("quota", "set", GROUP, "--cpu-core-hours", "0.0001")
            warning = _wait_for_stop_warning(fac, alice)
            stops_at = datetime.fromisoformat(warning["stops_at"]).strftime("%H:%M UTC")
            page.reload()  # Lab also asks every 30 s; a reload shows it at once
            toast = page.locator(".Toastify__toast", has_text="will be stopped at")
            toast.wait_for(timeout=60_000)
            assert f"will be stopped at {stops_at}" in toast.text_content()
            assert f"group {GROUP}" in toast.text_content()
            page.wait_for_function(
                "() => document.querySelector('#afhub-quota').textContent.includes('stop at')",
                timeout=30_000,
            )
            assert item.text_content() == f"afhub: {GROUP}: stop at {stops_at}"
            _shot(page, "lab-stop-warning")
            assert datetime.fromisoformat(warning["stops_at"]) > datetime.now(
                datetime.fromisoformat(warning["stops_at"]).tzinfo
            ), "the warning must come before the stop"
        finally:
            page.close()
            browser.close()
    assert errors == []


def test_facility_api_down_is_a_503_with_a_sentence(fac, people):
    """Last: the facility API is killed (the hub starts it again within its poll)."""
    _alice, bob = people
    service = [
        proc
        for proc in psutil.process_iter(["cmdline", "environ"])
        if "afhub.services.facility_api" in " ".join(proc.info["cmdline"] or [])
        and (proc.info["environ"] or {}).get("AFHUB_HOME") == str(fac.home)
    ]
    assert len(service) == 1, service
    service[0].send_signal(signal.SIGKILL)
    # dead at once; the hub reaps it (and starts it again) at its next poll of the service
    with contextlib.suppress(psutil.NoSuchProcess):
        while service[0].status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.01)
    response = bob.get("quota", bob.token)
    assert response.status_code == 503, response.text
    assert "try again soon" in response.json()["error"]
