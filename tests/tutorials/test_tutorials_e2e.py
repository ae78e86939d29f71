"""The five onboarding tutorials, run end to end against a real local facility.

A student invited by link into a course group logs in, opens the link, and starts a server
charged to the course; its first start put the tutorials in the home
(afhub.spawners.tutorials), and the hub's home page links each. Every notebook is then
executed with nbclient in the environment of that started server (taken from a kernel of the
server itself: the server's own token, the facility's URLs, Dask Gateway's settings, the
profile's CPU/GPU variables), with the notebook's folder in the home as working directory,
and its outputs are checked: the greeting and the tutorials listed, the student's group and
quota, a known sum computed on a Dask cluster, CLs values for every point of the grid with
an exclusion map, and torch saying CPU or GPU as the server really has. A tutorial that
breaks fails here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urljoin

import nbformat
import pytest
import requests
from nbclient import NotebookClient

from afhub.spawners.local import safe_name
from afhub.spawners.tutorials import REPOSITORY_FOLDER
from tests.browser import ARTIFACTS, CHROMIUM_ARGS, chromium_path
from tests.facility import run_in_kernel

pytestmark = [pytest.mark.facility, pytest.mark.slow]

#: the server's environment as its kernels see it, less what belongs to that one kernel
ENVIRONMENT_CODE = (
    "import json, os; print(json.dumps({k: v for k, v in os.environ.items() "
    "if not k.startswith(('JPY_', 'KERNEL_'))}))"
)


#: the course group's monthly budget, which the student sees in tutorial 2 and in Lab
COURSE_CORE_HOURS = 100


def invitation_link(facility, group: str) -> str:
    """A facility admin creates ``group`` with a budget of ``COURSE_CORE_HOURS`` and a
    single-use invitation into it; its link."""
    api = facility.url + "services/facility/api/"
    admin = {"Authorization": f"token {facility.admin_token()}"}
    created = requests.post(api + "groups", json={"path": group}, headers=admin, timeout=30)
    assert created.status_code in (200, 201), created.text
    quota = requests.put(
        api + f"groups/{group}/-/quota",
        json={"cpu_core_hours": COURSE_CORE_HOURS},
        headers=admin,
        timeout=30,
    )
    assert quota.status_code == 200, quota.text
    invitation = requests.post(
        api + f"groups/{group}/-/invitations",
        json={"uses": 1, "expires_in_hours": 1},
        headers=admin,
        timeout=30,
    )
    assert invitation.status_code == 201, invitation.text
    return urljoin(facility.url, invitation.json()["join_url"])


@pytest.fixture(scope="module")
def student(facility):
    """A new user invited by link into a course group: logs in, opens the link (the join
    page, through the hub's OAuth as a browser does), starts a server charged to the course
    (its first start); the server's environment and a logged-in session."""
    import uuid

    suffix = uuid.uuid4().hex[:8]
    name, group = f"student-{suffix}", f"course-{suffix}"
    link = invitation_link(facility, group)
    password = facility.add_user(name)
    session = facility.login(name, password)  # the first login: the default group, users
    joined = session.get(link, timeout=60)
    assert joined.status_code == 200, joined.text[:500]
    assert group in joined.text
    session.start_server(options={"charge_to": group})
    token = session.new_token("tutorials test")
    environment = json.loads(run_in_kernel(facility.url, name, token, ENVIRONMENT_CODE))
    yield {
        "name": name,
        "group": group,
        "password": password,
        "session": session,
        "token": token,
        "env": environment,
        "home": facility.home / "homes" / safe_name(name),
    }
    session.stop_server()


#: the MIME type of a plotly figure in a notebook's output
PLOTLY = "application/vnd.plotly.v1+json"


def execute(notebook: Path, env: dict[str, str]) -> list:
    """Run ``notebook`` in a kernel with ``env`` (its folder as working directory); the
    outputs of its code cells, in order."""
    nb = nbformat.read(notebook, as_version=4)
    client = NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook.parent)}},
    )
    client.execute(env=env)
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def printed(outputs: list) -> str:
    """What the cells printed."""
    return "".join(out.get("text", "") for out in outputs if out.output_type == "stream")


def figures(outputs: list) -> list[dict]:
    """The plotly figures the cells displayed."""
    return [out.data[PLOTLY] for out in outputs if PLOTLY in out.get("data", {})]


def test_first_start_placed_the_tutorials(student):
    placed = sorted(p.name for p in (student["home"] / "tutorials").glob("*.ipynb"))
    shipped = sorted(p.name for p in REPOSITORY_FOLDER.glob("*.ipynb"))
    assert placed == shipped
    assert len(placed) == 5
    for name in placed:
        ours = (REPOSITORY_FOLDER / name).read_bytes()
        assert (student["home"] / "tutorials" / name).read_bytes() == ours


def test_home_page_links_each_tutorial_in_the_students_server(facility, student):
    session = student["session"]
    page = session.get(urljoin(facility.hub_url, "home"), timeout=30)
    assert page.status_code == 200
    assert 'id="afhub-tutorials"' in page.text
    links = re.findall(r'class="afhub-tutorial"\s+href="([^"]+)"', page.text)
    prefix = f"/user/{student['name']}/lab/tree/tutorials/"
    assert links == [prefix + p.name for p in sorted(REPOSITORY_FOLDER.glob("*.ipynb"))]
    headers = {"Authorization": f"token {student['token']}"}
    for link in links:  # each target exists in the server (its contents API)
        path = link.removeprefix(f"/user/{student['name']}/lab/tree/")
        contents = urljoin(facility.url, f"user/{student['name']}/api/contents/{path}")
        response = requests.get(contents, headers=headers, params={"content": "0"}, timeout=30)
        assert response.status_code == 200, (link, response.text[:200])
        assert response.json()["type"] == "notebook"


@pytest.mark.browser
def test_home_page_card_in_chromium_opens_a_tutorial_in_lab(facility, student):
    """The card renders in the hub's look with no console error, and a link opens the
    notebook in the student's JupyterLab (screenshots kept)."""
    path = chromium_path()
    if path is None:
        pytest.fail("Chromium is missing: .ci/run installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        page = browser.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(facility.hub_url + "login?next=/hub/home", timeout=30_000)
            page.fill("input#username_input", student["name"])
            page.fill("input#password_input", student["password"])
            page.click("#login_submit")
            page.wait_for_selector("#afhub-tutorials", timeout=30_000)
            assert page.locator("#afhub-tutorials a.afhub-tutorial").count() == 5
            page.screenshot(path=str(ARTIFACTS / "tutorials-home.png"), full_page=True)
            assert not errors, errors
            page.click("#afhub-tutorials a.afhub-tutorial >> nth=0")
            page.wait_for_url("**/lab/tree/tutorials/01-first-login-and-jupyterlab.ipynb")
            heading = page.locator(".jp-RenderedMarkdown h1", has_text="Your first login")
            heading.first.wait_for(state="visible", timeout=90_000)
            # the quota in Lab (afhub_lab's status-bar item) for the course that pays
            left = rf"afhub: {student['group']}: [\d.]+ of {COURSE_CORE_HOURS} CPU core-hours left"
            page.locator("#afhub-quota", has_text=re.compile(left)).wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "tutorials-01-in-lab.png"))
        finally:
            page.close()
            browser.close()


def run_tutorial(student, name: str) -> list:
    return execute(student["home"] / "tutorials" / f"{name}.ipynb", student["env"])


def test_01_first_login(student):
    out = printed(run_tutorial(student, "01-first-login-and-jupyterlab"))
    assert f"Hello, {student['name']}!" in out
    for notebook in REPOSITORY_FOLDER.glob("*.ipynb"):
        assert notebook.name in out
    assert "Resource: local-cpu" in out


def test_02_groups_and_quota(student):
    out = printed(run_tutorial(student, "02-my-groups-and-quota"))
    group = student["group"]
    assert f"You are {student['name']}; your default group is users" in out
    assert "group users: you are member" in out
    assert f"group {group}: you are member" in out  # joined by the invitation link
    assert f"This server is charged to group {group}" in out
    assert f"Group {group} (period:" in out
    assert re.search(rf"cpu_core_hours\s+used\s+\d\S* of {COURSE_CORE_HOURS}\b", out), out
    assert re.search(rf"Group {group} used \d+\.\d{{4}} core-hours", out)
    assert re.search(r"^1 of its 1 charges are yours", out, re.MULTILINE)  # this server
    assert "No warnings" in out


def test_03_dask_gateway(student):
    out = printed(run_tutorial(student, "03-scale-out-with-dask-gateway"))
    assert "The sum of squares of 0..999 is 332833500" in out
    assert "Correct!" in out
    assert "Cluster stopped; clusters left: []" in out


def test_04_fit_as_a_service(student):
    outputs = run_tutorial(student, "04-fit-as-a-service")
    out = printed(outputs)
    assert "Job done" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("sig_")]
    assert len(rows) == 6
    for row in rows:  # patch, status, engine, then CLs observed and expected
        assert row[1] == "converged", row
        cls_obs = float(row[3])
        assert 0.0 <= cls_obs <= 1.0
    found = re.search(r"Excluded at 95% CL: (\d) of 6 mass points", out)
    assert found, out
    assert 0 < int(found.group(1)) < 6  # light points excluded, heavy ones not
    (figure,) = figures(outputs)  # the exclusion plot: CLs over the grid, the 0.05 contour
    heatmap, contour = figure["data"]
    assert heatmap["type"] == "heatmap"
    assert sorted(heatmap["x"]) == [400, 600, 800]
    assert sorted(heatmap["y"]) == [0, 200]
    cls_values = sorted(float(row[3]) for row in rows)
    assert sorted(v for line in heatmap["z"] for v in line) == pytest.approx(cls_values, rel=1e-5)
    assert contour["type"] == "contour"
    assert contour["contours"]["start"] == contour["contours"]["end"] == 0.05


def test_05_torch_says_cpu_or_gpu(student):
    has_gpu = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.is_available())"],
        env=student["env"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.strip()
    out = printed(run_tutorial(student, "05-gpu-notebook-with-torch"))
    if has_gpu == "True":
        assert "Running on the GPU: " in out
        assert "Trained on CUDA" in out
    else:
        assert "No GPU is free for this server: running on the CPU." in out
        found = re.search(r"Trained on CPU: y = (-?\d+\.\d+) x \+ (-?\d+\.\d+)", out)
        assert found, out
        assert abs(float(found.group(1)) - 3) < 0.1
        assert abs(float(found.group(2)) - 2) < 0.1
