"""Issue 11, findings 1 and 4, against the real gateway of the session facility.

- Finding 1: Alice sends Bob a dashboard link carrying her token; Bob, logged in to the
  hub, opens it. The gateway must not serve Alice's scheduler on the hub's origin as Alice
  to Bob: tokens in URLs are refused (400 that says what to send), a browser is identified
  by its own hub login (OAuth), so Bob gets a 403 and Alice her dashboard, and every
  dashboard response carries ``Content-Security-Policy: sandbox`` (no
  ``allow-same-origin``) and ``nosniff``. Forged and missing tokens are 401 with a
  message, never 500.
- Finding 4: the gateway's cookies are ``HttpOnly``, ``SameSite=Lax`` and limited to the
  dashboard path; no cookie authenticates the API; a cross-site ``text/plain`` POST with
  the victim's cookies creates or scales nothing, while the API client (token in the
  ``Authorization`` header) keeps working.
"""

from __future__ import annotations

import time
import uuid
from urllib.parse import urljoin

import pytest
import requests

from tests.facility import Facility

pytestmark = [pytest.mark.facility, pytest.mark.slow]

#: what a browser sends when the user opens a link (a top-level navigation)
NAVIGATE = {
    "Accept": "text/html,application/xhtml+xml",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
    "Sec-Fetch-Site": "none",
}


def gateway_url(facility: Facility) -> str:
    return urljoin(facility.url, "services/dask-gateway/")


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


class Person:
    """A user logged in to the hub (browser cookies) with an API token."""

    def __init__(self, facility: Facility, prefix: str):
        self.name = f"{prefix}{uuid.uuid4().hex[:6]}"
        self.browser = facility.login(self.name, facility.add_user(self.name))
        self.token = self.browser.new_token("dashboard tests")
        self.api = gateway_url(facility) + "api/v1/"

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"jupyterhub {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, self.api + path, headers=headers, timeout=30, **kwargs)

    def clusters(self) -> dict:
        r = self.call("GET", "clusters/")
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def alice_cluster(facility):
    """Alice and a running cluster of hers (REST, her token in the header), Bob."""
    alice, bob = Person(facility, "alice"), Person(facility, "bob")
    r = alice.call("POST", "clusters/", json={"cluster_options": {}})
    assert r.status_code == 201, r.text
    name = r.json()["name"]

    def running():
        model = alice.call("GET", f"clusters/{name}").json()
        return model if model.get("status") == "RUNNING" and model.get("dashboard_route") else None

    wait_for(running, 90, "Alice's cluster to run")
    yield alice, bob, name
    alice.call("DELETE", f"clusters/{name}")


def dashboard(facility: Facility, name: str) -> str:
    return gateway_url(facility) + f"clusters/{name}/status"


def assert_sandboxed(response: requests.Response) -> None:
    policy = response.headers.get("Content-Security-Policy", "")
    directives = [d.strip() for d in policy.split(";")]
    sandbox = next((d for d in directives if d.split()[:1] == ["sandbox"]), None)
    assert sandbox is not None, response.headers
    assert "allow-same-origin" not in sandbox
    assert "allow-top-navigation" not in sandbox
    assert response.headers.get("X-Content-Type-Options") == "nosniff"
    assert "Set-Cookie" not in response.headers


def test_dashboard_link_with_alices_token_does_not_act_for_bob(facility, alice_cluster):
    alice, bob, name = alice_cluster
    # Bob opens the link Alice sent, logged in to the hub (his cookies go with it)
    r = bob.browser.get(f"{dashboard(facility, name)}?token={alice.token}", headers=NAVIGATE)
    assert r.status_code == 400, (r.status_code, r.headers, r.text[:300])
    assert "bokeh" not in r.text.lower()
    assert "tokens in URLs are refused" in r.json()["error"]
    assert "Authorization" in r.json()["error"]
    # other spellings of a token in the URL, on the dashboard and on the API
    for query in (f"access_token={alice.token}", f"TOKEN={alice.token}"):
        r = bob.browser.get(f"{dashboard(facility, name)}?{query}", headers=NAVIGATE)
        assert r.status_code == 400, (query, r.status_code)
    r = requests.get(gateway_url(facility) + f"api/v1/clusters/?token={alice.token}", timeout=30)
    assert r.status_code == 400
    assert "tokens in URLs are refused" in r.json()["error"]

    # the same link without the token: Bob's browser is identified as Bob (the hub's
    # OAuth), and Bob does not own the cluster
    r = bob.browser.get(dashboard(facility, name), headers=NAVIGATE)
    assert r.status_code == 403, (r.status_code, r.url, r.text[:300])
    assert f"User {bob.name} lacks permissions" in r.json()["error"]
    assert "bokeh" not in r.text.lower()


def test_owner_sees_the_dashboard_sandboxed_through_the_hub_login(facility, alice_cluster):
    alice, _, name = alice_cluster
    r = alice.browser.get(dashboard(facility, name), headers=NAVIGATE, allow_redirects=False)
    assert r.status_code == 302
    assert "/hub/api/oauth2/authorize" in r.headers["Location"]
    state_cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in state_cookie
    assert "SameSite=Lax" in state_cookie
    # the browser follows the hub's OAuth (Alice is logged in) back to the dashboard, at
    # clusters/NAME/~KEY/status: the key admits the page's own subresources, which the
    # sandbox's opaque origin requests without cookies
    r = alice.browser.get(dashboard(facility, name), headers=NAVIGATE)
    assert r.status_code == 200, (r.status_code, r.url, r.text[:300])
    assert "bokeh" in r.text.lower()
    assert_sandboxed(r)
    page_base = r.url.rsplit("/", 1)[0] + "/"
    assert page_base.startswith(gateway_url(facility) + f"clusters/{name}/~"), r.url
    sub = requests.get(page_base + "info/main/workers.html", timeout=30)
    assert sub.status_code == 200
    assert "html" in sub.text.lower()
    assert_sandboxed(sub)
    # the key reads this cluster's dashboard only; a page load under it needs the owner
    other = requests.get(
        gateway_url(facility) + "clusters/another/" + page_base.rsplit("/", 2)[-2] + "/status",
        timeout=30,
    )
    assert other.status_code == 404
    assert "expired" in other.json()["error"]
    r = bob_like = requests.get(page_base + "status", headers=NAVIGATE, timeout=30)
    assert bob_like.status_code == 200
    assert "/~" not in r.url
    assert "oauth2/authorize" in r.url or "login" in r.url  # ...and to the hub's login
    # the dashboard session cookie: HttpOnly, SameSite=Lax, only for the dashboards' path
    session = [c for c in alice.browser.cookies if c.name == "afhub-dask-dashboard"]
    assert len(session) == 1, list(alice.browser.cookies)
    assert session[0].path == "/services/dask-gateway/clusters/"
    assert session[0].has_nonstandard_attr("HttpOnly")
    assert session[0].get_nonstandard_attr("SameSite") == "Lax"
    # subresources of the dashboard are sandboxed too, and a token in the header works
    r = requests.get(
        gateway_url(facility) + f"clusters/{name}/info/main/workers.html",
        headers={"Authorization": f"jupyterhub {alice.token}"},
        timeout=30,
    )
    assert r.status_code == 200
    assert "html" in r.text.lower()
    assert_sandboxed(r)
    # read-only: nothing but GET and HEAD reaches the scheduler
    r = alice.browser.post(dashboard(facility, name), data="x", headers={"Origin": facility.url})
    assert r.status_code in (403, 405), r.status_code


def test_forged_and_missing_tokens_are_401_with_a_message(facility, alice_cluster):
    _, _, name = alice_cluster
    for url in (dashboard(facility, name), gateway_url(facility) + "api/v1/clusters/"):
        for headers in (
            {"Authorization": "jupyterhub forged-token-0123456789"},
            {"Authorization": "token forged"},
            {"Authorization": "garbage"},
            {},
        ):
            r = requests.get(url, headers=headers, timeout=30)
            assert r.status_code == 401, (url, headers, r.status_code, r.text[:200])
            message = r.json()["error"]
            assert "token" in message.lower() or "log in" in message, message
    r = requests.get(dashboard(facility, name) + "?token=forged", timeout=30)
    assert r.status_code == 400
    assert "Authorization" in r.json()["error"]


# dask_gateway's Gateway.__del__ closes a second time after close() and complains
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_api_sets_no_cookie_and_cross_site_posts_change_nothing(facility, alice_cluster):
    alice, _, name = alice_cluster
    r = alice.call("GET", "clusters/")
    assert r.status_code == 200
    assert "Set-Cookie" not in r.headers, r.headers
    # Alice's browser holds every cookie the gateway ever gave her (a dashboard session
    # included); a page on another site makes it POST text/plain (a CORS-simple request)
    alice.browser.get(dashboard(facility, name), headers=NAVIGATE)
    assert any(c.name == "afhub-dask-dashboard" for c in alice.browser.cookies)
    gateway_cookies = "; ".join(f"{c.name}={c.value}" for c in alice.browser.cookies)
    before = set(alice.clusters())
    attacks = [
        ("clusters/", '{"cluster_options": {}}'),
        (f"clusters/{name}/scale", '{"count": 3}'),
        (f"clusters/{name}/adapt", '{"minimum": 3, "maximum": 3}'),
    ]
    for cross_site in (
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"},
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {},  # a browser that sends neither: the cookie still authenticates nothing
    ):
        for path, body in attacks:
            r = requests.post(
                alice.api + path,
                data=body,
                headers={"Content-Type": "text/plain", "Cookie": gateway_cookies, **cross_site},
                timeout=30,
            )
            assert r.status_code in (401, 403), (path, cross_site, r.status_code, r.text)
            assert r.json()["error"], r.text
    time.sleep(1)
    assert set(alice.clusters()) == before
    model = alice.call("GET", f"clusters/{name}").json()
    assert model["status"] == "RUNNING"
    # the API client (token in the header) keeps working, scaling included
    from dask_gateway import Gateway, JupyterHubAuth

    gateway = Gateway(
        address=gateway_url(facility).rstrip("/"),
        proxy_address=f"gateway://127.0.0.1:{facility.gateway_proxy_port}",
        auth=JupyterHubAuth(api_token=alice.token),
    )
    try:
        assert name in [c.name for c in gateway.list_clusters()]
        gateway.scale_cluster(name, 0)
    finally:
        gateway.close()


@pytest.fixture(scope="module")
def chromium():
    from tests.browser import CHROMIUM_ARGS, chromium_path

    path = chromium_path()
    if path is None:
        pytest.fail("Chromium is missing: .ci/run installs it (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def browser_of(chromium, person: Person, facility: Facility):
    """A browser context holding ``person``'s hub login (their session's cookies)."""
    context = chromium.new_context()
    context.add_cookies(
        [
            {"name": c.name, "value": c.value, "url": urljoin(facility.url, c.path or "/")}
            for c in person.browser.cookies
        ]
    )
    return context


#: what a script served by a scheduler tries first: read the hub's home page (its XSRF
#: token) with the viewer's cookies
READ_HUB = """
() => fetch('/hub/home', {credentials: 'include'})
    .then(r => r.text())
    .then(t => 'READ ' + (t.includes('_xsrf') || t.includes('xsrf') ? 'xsrf' : t.length),
          e => 'BLOCKED ' + e)
"""


@pytest.mark.browser
def test_in_a_browser_the_link_attack_fails_and_dashboard_scripts_are_isolated(
    facility, alice_cluster, chromium
):
    alice, bob, name = alice_cluster
    # Bob opens Alice's link (her token in it) in his logged-in browser
    context = browser_of(chromium, bob, facility)
    try:
        page = context.new_page()
        response = page.goto(f"{dashboard(facility, name)}?token={alice.token}")
        assert response.status == 400, response.status
        assert "tokens in URLs are refused" in page.content()
        # without the token: the hub's login identifies Bob, who does not own the cluster
        response = page.goto(dashboard(facility, name))
        assert response.status == 403
        assert bob.name in page.content()
    finally:
        context.close()
    # Alice opens her own dashboard: shown, but what her scheduler serves runs in an
    # opaque origin and cannot use her hub session
    context = browser_of(chromium, alice, facility)
    try:
        page = context.new_page()
        response = page.goto(dashboard(facility, name))
        assert response.status == 200, (response.status, page.url)
        assert page.url.startswith(gateway_url(facility) + f"clusters/{name}/~")
        assert page.evaluate("() => window.origin") == "null"
        # the page's relative subresources load (no cookie leaves the opaque origin): the
        # gateway answers them 200 (the browser then drops an HTML "image", as it should)
        probe = uuid.uuid4().hex
        page.evaluate(
            "(p) => { const i = document.createElement('img');"
            " i.src = 'info/main/workers.html?probe=' + p; document.body.appendChild(i); }",
            probe,
        )
        wanted = f"200 GET /clusters/{name}/~[secret]/info/main/workers.html?probe={probe}"
        wait_for(lambda: wanted in facility.log_path.read_text(errors="replace"), 20, wanted)
        result = page.evaluate(READ_HUB)
        assert result.startswith("BLOCKED"), result
        assert page.evaluate(
            "() => { try { return document.cookie } catch (e) { return 'X' } }"
        ) in (
            "",
            "X",
        )
    finally:
        context.close()
