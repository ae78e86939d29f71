"""Issue 13's "Done when": README's quick start, walked by a new user in a real browser.

One facility started with ``afhub up --demo``. The demo student logs in with the password
the demo printed, picks the simulated GPU on the spawn form, runs cells in JupyterLab (the
cell sees the simulated device, starts a Dask cluster, fits the example likelihood), and
reads the group's usage from the REST API with a token of their own. A second seeding
changes nothing.
"""

from __future__ import annotations

import stat
import subprocess
import sys
from urllib.parse import urljoin

import pytest
import requests

from tests.browser import ARTIFACTS, CHROMIUM_ARGS, chromium_path
from tests.facility import Facility

pytestmark = [pytest.mark.facility, pytest.mark.browser, pytest.mark.slow]

STUDENT = "student"
STUDENT_GROUP = "atlas/higgs/students"

#: the quick start's cells (docs/quickstart.md), one statement line each
CELL_DEVICE = (
    'import os; print("DEVICE", os.environ["AFHUB_RESOURCE"], os.environ["AFHUB_DEVICES"], '
    'os.environ["AFHUB_DEVICES_SIMULATED"], repr(os.environ["CUDA_VISIBLE_DEVICES"]))'
)
CELL_DASK = (
    "from dask_gateway import Gateway; cluster = Gateway().new_cluster(); "
    "client = cluster.get_client(); cluster.scale(1); "
    "client.wait_for_workers(1, timeout=120); "
    'print("DASK", client.submit(sum, [1, 2, 3]).result()); cluster.shutdown()'
)
CELL_FIT = (
    "import json; from afhub.client import FitClient; fits = FitClient(); "
    'job = fits.submit(json.load(open("examples/BkgOnly.json")), '
    'patchset=json.load(open("examples/patchset.json"))); '
    "state = fits.wait(job, timeout=300)['state']; rows = fits.table(job); "
    'print("FIT", state, len(rows), sum(r["status"] == "converged" for r in rows), '
    'sum(r.get("cls_obs", 1) < 0.05 for r in rows))'
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    facility = Facility(tmp_path_factory.mktemp("quickstart"), up_args=("--demo",))
    facility.start(timeout=180)
    yield facility
    facility.stop()
    facility.cleanup_orphans()


def demo_password(facility: Facility, name: str) -> str:
    path = facility.home / f"demo-password-{name}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path.read_text().strip()


def seed_again(facility: Facility) -> str:
    """Seed the demo once more into the running facility; its output."""
    code = (
        "from afhub.settings import load_settings; from afhub.cli.demo import seed_demo; "
        "raise SystemExit(seed_demo(load_settings()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=facility.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_demo_users_passwords_printed_once_private_and_seeding_idempotent(demo):
    log = demo.log_path.read_text()
    passwords = {name: demo_password(demo, name) for name in ("lead", STUDENT)}
    assert all(log.count(p) == 1 for p in passwords.values()), "each printed once"
    assert len(set(passwords.values())) == 2
    admin = demo.login("admin", demo.admin_password)
    headers = {"Authorization": f"token {admin.new_token('quick start')}"}
    api = urljoin(demo.url, "services/facility/api/")

    def get(path: str) -> dict:
        r = requests.get(api + path, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    # an operator's change that a second seeding must keep
    r = requests.put(
        api + "groups/cms/-/quota", json={"max_servers": 3}, headers=headers, timeout=30
    )
    assert r.status_code == 200, r.text

    def state() -> tuple:
        cms = get("groups/cms/-/quota")["chain"][-1]["limits"]
        return (
            sorted(g["path"] for g in get("groups")["groups"]),
            sorted((r["name"], r["description"]) for r in get("resources")["resources"]),
            get(f"groups/{STUDENT_GROUP}/-/members")["members"],
            {name: value["limit"] for name, value in cms.items()},
        )

    before = state()
    assert {"atlas", "atlas/higgs", STUDENT_GROUP, "cms"} <= set(before[0])
    simulated = [name for name, text in before[1] if "Simulated" in text]
    assert simulated == ["demo-fpga", "demo-gpu", "demo-mig"], before[1]
    assert before[3]["max_servers"] == 3
    out = seed_again(demo)
    assert not any(p in out for p in passwords.values())
    assert state() == before
    assert {name: demo_password(demo, name) for name in passwords} == passwords


def run_cell(page, code: str, expect: str, timeout_s: float) -> str:
    """Type ``code`` into the notebook's last cell, run it (Shift+Enter), wait for an output
    holding ``expect``; returns that output's text. A traceback fails at once, with it."""
    page.locator(".jp-Notebook .jp-Cell").last.locator(".cm-content").click()
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")
    outputs = page.locator(".jp-OutputArea-output")
    expected = outputs.filter(has_text=expect)
    error = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.error"]')
    expected.or_(error).first.wait_for(timeout=timeout_s * 1000)
    assert error.count() == 0, error.first.inner_text()
    return expected.first.inner_text()


def test_quick_start_walk_as_the_demo_student(demo):
    path = chromium_path()
    if path is None:
        pytest.fail("Chromium is missing: .ci/run installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    password = demo_password(demo, STUDENT)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        page = browser.new_page()
        try:
            outputs = walk(page, demo, password)
        finally:
            page.screenshot(path=str(ARTIFACTS / "quickstart-walk.png"))
            browser.close()
    assert outputs["device"].split() == ["DEVICE", "demo-gpu", "0", "1", "''"], outputs
    assert outputs["dask"].strip() == "DASK 6", outputs
    fit = outputs["fit"].split()
    assert fit[:2] == ["FIT", "done"], outputs
    total, converged, excluded = (int(n) for n in fit[2:])
    assert total == converged == 19, outputs  # the example grid's points, all converged
    assert 0 < excluded < total, outputs  # light points excluded, heavy ones not
    assert "demo-gpu" in outputs["running"], outputs
    assert STUDENT_GROUP in outputs["usage page"], outputs

    # see usage: the REST API as the student, with a token of their own
    token = demo.login(STUDENT, password).new_token("quick start usage")
    usage = requests.get(
        urljoin(demo.url, f"services/facility/api/groups/{STUDENT_GROUP}/-/usage"),
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert usage.status_code == 200, usage.text
    rows = usage.json()["intervals"]
    assert any(r["user"] == STUDENT and r["resource"] == "demo-gpu" for r in rows), rows
    assert any(r["user"] == STUDENT and r["kind"] != "server" for r in rows), rows
    # ... and only their own groups' usage
    other = requests.get(
        urljoin(demo.url, "services/facility/api/groups/cms/-/usage"),
        headers={"Authorization": f"token {token}"},
        timeout=30,
    )
    assert other.status_code == 403, other.text
    # the fit from a shell, as docs/quickstart.md shows it
    examples = demo.home / "homes" / STUDENT / "examples"
    command = ["fit", "submit", str(examples / "BkgOnly.json")]
    command += ["--patchset", str(examples / "patchset.json"), "--wait"]
    command += ["--url", demo.url, "--token", token]
    shell = subprocess.run(
        [sys.executable, "-m", "afhub", *command],
        env=demo.env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.count("converged") == 19, shell.stdout
    demo.login(STUDENT, password).stop_server()


def walk(page, demo: Facility, password: str) -> dict[str, str]:
    """Log in, pick the simulated GPU, run the device, Dask and fit cells, open My usage."""
    page.goto(demo.hub_url + "login", timeout=30_000)
    page.fill("input#username_input", STUDENT)
    page.fill("input#password_input", password)
    page.click("#login_submit")
    gpu = page.locator("#profile-item-demo-gpu")
    gpu.wait_for(timeout=60_000)
    form = page.locator("form").first.inner_text()
    simulated = ("NVIDIA A100 80GB", "NVIDIA A100 MIG 1g.10gb", "AMD Alveo U250")
    for offered in ("CPU (this machine)", *(f"Simulated {name}" for name in simulated)):
        assert offered in form, form
    page.screenshot(path=str(ARTIFACTS / "quickstart-spawn-form.png"))
    gpu.click()
    page.click("input[type=submit], button[type=submit]")
    page.wait_for_url(f"**/user/{STUDENT}/lab**", timeout=120_000)
    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click(timeout=90_000)
    page.locator(".jp-Notebook .jp-Cell .cm-content").first.wait_for(timeout=60_000)
    # a cell run while the kernel still connects is not executed: wait until it is idle
    page.locator(".jp-StatusBar-TextItem", has_text="| Idle").first.wait_for(timeout=90_000)
    outputs = {
        "device": run_cell(page, CELL_DEVICE, "DEVICE", 90),
        "dask": run_cell(page, CELL_DASK, "DASK", 180),
        "fit": run_cell(page, CELL_FIT, "FIT", 300),
    }
    # see usage: the My usage page (the top bar's link) while the GPU server runs
    page.goto(demo.url + "services/afhub/usage", timeout=60_000)
    outputs["running"] = page.locator("#afhub-running").inner_text(timeout=60_000)
    outputs["usage page"] = page.locator("body").inner_text()
    page.screenshot(path=str(ARTIFACTS / "quickstart-usage.png"))
    return outputs
