"""Issue 3 end to end through the real facility: groups, invitations, quotas enforced by
the hub at spawn and while servers run, the ledger, and a hub crash."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from datetime import UTC, datetime
from urllib.parse import urljoin

import psutil
import pytest
import requests

from afhub.stores.facade import Stores
from tests.facility import Facility
from tests.support.databases import POSTGRES_SKIP_REASON, postgres_database, postgres_server_url

pytestmark = [pytest.mark.facility, pytest.mark.slow]

CHECKPOINT_S = 1
GRACE_S = 3


class FacilityAPI:
    """The facility API (``/services/facility/api/``) with one user's token."""

    def __init__(self, facility: Facility, token: str):
        self.base = urljoin(facility.url, "services/facility/api/")
        self.headers = {"Authorization": f"token {token}"}

    def __call__(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(
            method, self.base + path, headers=self.headers, timeout=30, **kwargs
        )


@pytest.fixture(scope="module")
def fac(tmp_path_factory):
    facility = Facility(
        tmp_path_factory.mktemp("quota-facility"),
        env={
            "AFHUB_CHECKPOINT_INTERVAL": str(CHECKPOINT_S),
            "AFHUB_GRACE_PERIOD": str(GRACE_S),
        },
    )
    facility.start()
    yield facility
    facility.stop()
    facility.cleanup_orphans()


@pytest.fixture(scope="module")
def admin(fac):
    session = fac.login("admin", fac.admin_password)
    return FacilityAPI(fac, session.new_token("quota tests"))


def spawn(session, group: str | None = None, name: str = "") -> requests.Response:
    options = {"charge_to": group} if group else {}
    return session.api("POST", f"users/{session.username}/servers/{name}", json=options)


def intervals(fac: Facility, group: str) -> list:
    """Every ledger interval charged to ``group``'s subtree, read from the database."""
    url = fac.extra_env.get("AFHUB_DB_URL", f"sqlite:///{fac.home / 'afhub.sqlite'}")
    stores = Stores.open(url, migrate=False)
    try:
        return stores.ledger.usage(group, datetime(2000, 1, 1, tzinfo=UTC)).intervals
    finally:
        stores.close()


def test_student_invited_spawns_until_budget_spent_then_refused(fac, admin):
    for path in ("atlas", "atlas/higgs", "atlas/higgs/students"):
        assert admin("POST", "groups", json={"path": path}).status_code == 201
    # parent limit smaller than the child's: the parent's limit always holds
    r = admin("PUT", "groups/atlas/higgs/-/quota", json={"cpu_core_hours": 0.002})
    assert r.status_code == 200, r.text
    r = admin(
        "PUT", "groups/atlas/higgs/students/-/quota", json={"cpu_core_hours": 1.0, "max_servers": 1}
    )
    assert r.status_code == 200, r.text
    invitation = admin("POST", "groups/atlas/higgs/students/-/invitations", json={"uses": 1})
    assert invitation.status_code == 201, invitation.text
    token = invitation.json()["token"]

    password = fac.add_user("student")
    student = fac.login("student", password)
    student_api = FacilityAPI(fac, student.new_token("student"))
    joined = student_api("POST", "invitations/redeem", json={"token": token})
    assert joined.status_code == 200, joined.text
    # single-use means single-use
    other = fac.login(fac_user := "latecomer", fac.add_user(fac_user))
    again = FacilityAPI(fac, other.new_token("x"))(
        "POST", "invitations/redeem", json={"token": token}
    )
    assert again.status_code in (400, 409, 410)
    assert "error" in again.json()

    # the hub mirrors afhub's groups (the accountant runs every second)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        groups = student.api("GET", "user").json()["groups"]
        if "atlas/higgs/students" in groups:
            break
        time.sleep(0.5)
    assert "atlas/higgs/students" in groups

    assert spawn(student, "atlas/higgs/students").status_code in (201, 202)
    student.wait_for_server()
    # 1 core for > 7.2 s spends the parent's 0.002 core-hours: warned, then stopped
    warnings = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        warnings = warnings or student_api("GET", "users/me").json()["warnings"]
        if student.api("GET", "users/student").json()["servers"] == {}:
            break
        time.sleep(0.3)
    else:
        pytest.fail("the server over budget was not stopped")
    assert warnings
    assert warnings[0]["group"] == "atlas/higgs/students", warnings
    assert "will be stopped at" in warnings[0]["message"]
    closed = intervals(fac, "atlas/higgs/students")
    assert closed
    assert closed[-1].state == "closed"

    refused = spawn(student, "atlas/higgs/students")
    assert refused.status_code == 403
    message = refused.json()["message"]
    assert "atlas/higgs" in message
    assert "CPU core-hours" in message
    assert "0.002" in message
    assert "reset" in message.lower()
    assert student.api("GET", "users/student").json()["servers"] == {}


def test_charge_to_a_group_one_is_not_in_is_refused(fac, admin):
    admin("POST", "groups", json={"path": "cms"})
    session = fac.login("outsider", fac.add_user("outsider"))
    refused = spawn(session, "cms")
    assert refused.status_code == 403
    assert "cms" in refused.json()["message"]
    bad = spawn(session, "../../etc")
    assert bad.status_code == 400
    assert "charge_to" in bad.json()["message"]
    assert session.api("GET", "users/outsider").json()["servers"] == {}


def test_twenty_racing_spawns_for_three_slots_start_exactly_three(fac, admin):
    assert admin("POST", "groups", json={"path": "race"}).status_code == 201
    assert admin("PUT", "groups/race/-/quota", json={"max_servers": 3}).status_code == 200
    sessions = []
    for i in range(20):
        name = f"racer{i:02d}"
        session = fac.login(name, fac.add_user(name))
        assert admin("PUT", f"groups/race/-/members/{name}", json={"role": "member"}).ok
        sessions.append(session)
    results: dict[str, int] = {}
    barrier = threading.Barrier(len(sessions))

    def go(session):
        barrier.wait()
        results[session.username] = spawn(session, "race").status_code

    threads = [threading.Thread(target=go, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    started = sorted(u for u, code in results.items() if code in (201, 202))
    refused = [u for u, code in results.items() if code == 403]
    assert len(started) == 3, results
    assert len(refused) == 17, results
    for session in sessions:
        if session.username in started:
            session.wait_for_server()
            session.stop_server()


@pytest.mark.usefixtures("admin")
def test_failed_spawn_is_never_charged(fac):
    session = fac.login("unlucky", fac.add_user("unlucky"))
    # a file where the home folder must be: the server cannot start
    (fac.home / "homes").mkdir(exist_ok=True)
    (fac.home / "homes" / "unlucky").write_text("not a folder")
    response = spawn(session)
    if response.status_code in (201, 202):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            model = session.api("GET", "users/unlucky").json()
            if not model["servers"] and model["pending"] is None:
                break
            time.sleep(0.5)
    with sqlite3.connect(fac.home / "afhub.sqlite") as db:
        rows = db.execute("SELECT state FROM afhub_ledger WHERE user_name = 'unlucky'").fetchall()
    assert rows
    assert all(state == "failed" for (state,) in rows), rows
    report = [i for i in intervals(fac, "users") if i.user == "unlucky"]
    assert sum(i.hours() for i in report) == 0
    (fac.home / "homes" / "unlucky").unlink()


@pytest.fixture(params=["sqlite", "postgresql"])
def facility_db(request):
    """The facility database for the crash test: SQLite, and PostgreSQL when available."""
    if request.param == "sqlite":
        yield {}
        return
    server = postgres_server_url()
    if server is None:
        pytest.skip(POSTGRES_SKIP_REASON)
    with postgres_database(server) as url:
        yield {"AFHUB_DB_URL": url}


def test_hub_crash_ledger_matches_true_lifetime_within_a_checkpoint(tmp_path, facility_db):
    fac = Facility(
        tmp_path / "crash",
        env={"AFHUB_CHECKPOINT_INTERVAL": str(CHECKPOINT_S), **facility_db},
    )
    try:
        fac.start()
        session = fac.login("crashy", fac.add_user("crashy"))
        assert spawn(session).status_code in (201, 202)
        session.wait_for_server()
        ready_seen = time.time()
        server_pid = next(
            p.pid
            for p in psutil.process_iter(["cmdline", "environ"])
            if "jupyterhub.singleuser" in " ".join(p.info["cmdline"] or [])
            and (p.info["environ"] or {}).get("JUPYTERHUB_USER") == "crashy"
        )
        started = psutil.Process(server_pid).create_time()
        time.sleep(4 * CHECKPOINT_S)
        # the machine "crashes": hub and server die at once
        fac.kill()
        os.kill(server_pid, signal.SIGKILL)
        died = time.time()
        fac.cleanup_orphans()
        fac.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = intervals(fac, "users")
            if found and found[0].state == "closed":
                break
            time.sleep(0.5)
        interval = found[0]
        assert interval.state == "closed"
        charged = interval.hours() * 3600
        # charging starts when the hub sees the server ready
        charge_start = interval.start.timestamp()
        assert started <= charge_start <= ready_seen + 0.5
        true_lifetime = died - charge_start
        assert true_lifetime - charged <= CHECKPOINT_S + 1.0, (charged, true_lifetime)
        assert charged <= true_lifetime + 0.5
        # groups and the server's user survive the crash
        assert (
            "users"
            in fac.login(
                "crashy", fac.afhub("users", "reset-password", "crashy").stdout.split()[-1]
            )
            .api("GET", "user")
            .json()["groups"]
        )
    finally:
        fac.stop()
        fac.cleanup_orphans()


@pytest.mark.usefixtures("admin")
def test_cli_manages_groups_quotas_invitations_and_reports_usage(fac):
    run = fac.afhub
    run("groups", "create", "alice-lab")
    run("groups", "create", "alice-lab/team")
    assert "alice-lab/team" in run("groups", "list").stdout
    run("quota", "set", "alice-lab/team", "--max-servers", "2", "--cpu-core-hours", "5")
    shown = run("quota", "show", "alice-lab/team").stdout
    assert "max_servers" in shown or "concurrent servers" in shown
    bad = run("quota", "set", "alice-lab/team", "--cpu-core-hours", "-1", check=False)
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr
    assert bad.stderr.strip()
    invite = run("invite", "create", "alice-lab/team").stdout
    assert "join" in invite or "token" in invite.lower()
    # usage of a group that ran a server (the student's, above) as CSV
    csv = run("usage", "--group", "atlas/higgs", "--since", "2000-01-01", "--csv").stdout
    header, *rows = csv.strip().splitlines()
    assert "user" in header
    assert rows
    assert any("student" in row for row in rows)
    run("groups", "delete", "alice-lab/team")
    assert "alice-lab/team" not in run("groups", "list").stdout


@pytest.mark.browser
def test_spawn_form_follows_the_charge_choice_and_keeps_it_after_a_refusal(fac, admin):
    """Issue 13, the spawn form, in headless Chromium: the select looks like a select, the
    quota line follows the group chosen, and a refusal reads as plain words, keeps the
    choice and marks the full group."""
    from playwright.sync_api import sync_playwright

    from tests.browser import ARTIFACTS, CHROMIUM_ARGS, chromium_path

    for path, quota in (("roomy", {"max_servers": 3}), ("tight", {"max_servers": 1})):
        assert admin("POST", "groups", json={"path": path}).status_code == 201
        assert admin("PUT", f"groups/{path}/-/quota", json=quota).status_code == 200
    passwords = {name: fac.add_user(name) for name in ("picker", "filler", "tightboss")}
    sessions = {name: fac.login(name, pw) for name, pw in passwords.items()}
    for user, group, role in (
        ("picker", "roomy", "member"),
        ("picker", "tight", "member"),
        ("filler", "tight", "member"),
        ("tightboss", "tight", "admin"),
    ):
        r = admin("PUT", f"groups/{group}/-/members/{user}", json={"role": role})
        assert r.status_code in (200, 201), r.text
    path = chromium_path()
    if path is None:
        pytest.fail("Chromium is missing: .ci/run installs it (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        page = browser.new_page()
        try:
            page.goto(fac.hub_url + "login", timeout=30_000)
            page.fill("input#username_input", "picker")
            page.fill("input#password_input", passwords["picker"])
            page.click("#login_submit")
            page.wait_for_load_state()
            page.goto(fac.hub_url + "spawn", timeout=30_000)
            select = page.locator("#afhub-charge-to")
            # a select with the hub's dropdown arrow, not a text field's look
            image, appearance = select.evaluate(
                "el => [getComputedStyle(el).backgroundImage, getComputedStyle(el).appearance]"
            )
            assert "url(" in image or appearance == "auto", (image, appearance)
            line = page.locator("#afhub-quota-line")
            select.select_option("tight")
            assert line.inner_text() == "Quota of tight leaves 1 more server (of 1)."
            select.select_option("roomy")
            assert line.inner_text() == "Quota of roomy leaves 3 more servers (of 3)."
            # someone else takes tight's one server while the form is open
            sessions["filler"].start_server(options={"charge_to": "tight"})
            select.select_option("tight")
            page.click("#spawn_form button[type=submit]")
            page.wait_for_selector(".spawn-error-msg, #progress-message:not(:empty)")
            if "spawn-pending" in page.url:  # the refusal came after the hub's first second
                text = page.locator("#progress-message").inner_text()
                page.goto(fac.hub_url + "spawn", timeout=30_000)
            else:
                text = page.locator(".spawn-error-msg").inner_text()
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "spawn-form-refusal.png"))
            assert text.startswith("You cannot start this server."), text
            assert "HTTP" not in text
            assert "Error" not in text
            assert "Group 'tight' is at its limit of 1 concurrent servers: 1 of 1 in use." in text
            assert "another of your groups with room: 'roomy' or 'users'" in text, text
            assert "ask an admin of 'tight' (tightboss) to raise the limit" in text, text
            # the choice is kept, and marked full
            assert page.locator("#afhub-charge-to").input_value() == "tight"
            chosen = page.locator("#afhub-charge-to option:checked").inner_text()
            assert chosen == "tight (full: 1 of 1 servers)"
            assert (
                page.locator("#afhub-quota-line")
                .inner_text()
                .startswith("Quota of tight leaves 0 more servers")
            )
        finally:
            page.close()
            browser.close()
    assert sessions["picker"].api("GET", "users/picker").json()["servers"] == {}
    sessions["filler"].stop_server()
