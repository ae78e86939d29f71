"""The facility's pages in a real browser: Chromium driven by Playwright, logged in through
the hub's login form; console errors collected; screenshots kept (``AFHUB_SCREENSHOTS=1``
also writes them to ``docs/screenshots/`` for the docs)."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.browser import ARTIFACTS, CHROMIUM_ARGS, chromium_path

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


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


@dataclass
class Person:
    """A person in the browser: their page, and what its console said."""

    name: str
    page: object
    errors: list[str] = field(default_factory=list)

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"pages-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        if os.environ.get("AFHUB_SCREENSHOTS") == "1":
            DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(DOCS_SCREENSHOTS / f"pages-{name}.png"), full_page=True)
        return path


def log_in(browser, facility, name: str, password: str) -> Person:
    """A new browser context logged in to the hub as ``name``."""
    context = browser.new_context()
    page = context.new_page()
    person = Person(name, page)
    page.on("console", lambda m: person.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: person.errors.append(str(exc)))
    page.goto(facility.hub_url + "login?next=" + requests.utils.quote("/hub/token"))
    page.fill("input#username_input", name)
    page.fill("input#password_input", password)
    page.click("#login_submit")
    page.wait_for_url("**/hub/token", timeout=30_000)
    return person


@dataclass
class World:
    """Groups ``<top>/a`` (alice admin) and ``<top>/b`` (bob member, with a quota and a
    GPU resource ``<top>-a100`` of 8 devices that only ``<top>/b`` may use)."""

    top: str
    admin: dict
    alice: tuple[str, str]
    bob: tuple[str, str]

    def api(self, method: str, path: str, token: str | None = None, **kwargs) -> requests.Response:
        headers = {"Authorization": f"token {token or self.admin['token']}"}
        url = self.admin["url"] + "services/facility/api/" + path
        return requests.request(method, url, headers=headers, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def world(facility) -> World:
    top = f"web{uuid.uuid4().hex[:6]}"
    alice, bob = (f"{who}-{uuid.uuid4().hex[:6]}" for who in ("alice", "bob"))
    world = World(
        top,
        {"token": facility.admin_token(), "url": facility.url},
        (alice, facility.add_user(alice)),
        (bob, facility.add_user(bob)),
    )
    for name, password in (world.alice, world.bob):
        facility.login(name, password)  # first login: afhub knows them
    for path in (top, f"{top}/a", f"{top}/b"):
        assert world.api("POST", "groups", json={"path": path}).status_code == 201
    assert world.api("PUT", f"groups/{top}/a/-/members/{world.alice[0]}", json={"role": "admin"}).ok
    assert world.api("PUT", f"groups/{top}/b/-/members/{world.bob[0]}", json={"role": "member"}).ok
    assert world.api(
        "PUT", f"groups/{top}/b/-/quota", json={"gpu_hours": 5, "cpu_core_hours": 100}
    ).ok
    provider = {
        "name": f"{top}-lab",
        "institution": "Example University",
        "contacts": ["af@example.org"],
    }
    assert world.api("POST", "providers", json=provider).status_code == 201
    resource = {
        "name": f"{top}-a100",
        "provider": provider["name"],
        "site": "Example AF",
        "kind": "gpu",
        "accelerator": "NVIDIA A100 80GB",
        "count_per_node": 4,
        "node_count": 2,
        "cpu_per_node": 64,
        "memory_per_node": "512Gi",
        "extended_resource": "nvidia.com/gpu",
        "image": "ghcr.io/afhub/notebook-gpu:2026.11",
        "allowed_groups": [f"{top}/b"],
    }
    assert world.api("POST", "resources", json=resource).status_code == 201
    return world
