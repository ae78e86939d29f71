"""Issue 14: the facility's pages (afhub.web) against a real facility and headless Chromium:
every service root lands on a page, anonymous people go to login and back, controls only
where the API allows them, the API's refusals shown as text, XSRF on forms, no traversal
out of the static folder, the join page in the hub's look."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlparse

import pytest
import requests

from afhub.stores.facade import Stores
from tests.web.conftest import log_in

pytestmark = [pytest.mark.facility, pytest.mark.browser]

#: the console message of a page answered with an error status (expected on error pages)
FAILED_LOAD = "Failed to load resource"


def pages(facility) -> str:
    return facility.url + "services/afhub/"


def test_service_roots_land_on_pages_and_anonymous_goes_to_login(facility):
    for service, page in (("facility", "groups"), ("fitting", "usage"), ("dask-gateway", "usage")):
        root = requests.get(
            facility.url + f"services/{service}/", allow_redirects=False, timeout=30
        )
        assert root.status_code == 302, (service, root.status_code, root.text)
        assert root.headers["Location"] == f"/services/afhub/{page}"
    anonymous = requests.Session()
    first = anonymous.get(pages(facility) + "groups", allow_redirects=False, timeout=30)
    assert first.status_code == 302
    assert urlparse(first.headers["Location"]).path == "/hub/api/oauth2/authorize"
    landed = anonymous.get(pages(facility) + "groups", timeout=30)
    assert urlparse(landed.url).path == "/hub/login"
    back = parse_qs(urlparse(landed.url).query)["next"][0]
    assert back.startswith("/hub/api/oauth2/authorize")  # and from there back to the page
    # a token in a page's URL is refused before anything else (it would end up in logs)
    with_token = requests.get(
        pages(facility) + "groups?token=abc", allow_redirects=False, timeout=30
    )
    assert with_token.status_code == 400
    assert "tokens in URLs are refused" in with_token.text
    # an invitation link sent before the join page moved still works
    old = requests.get(
        facility.url + "services/facility/join/Abcdefghij0123", allow_redirects=False, timeout=30
    )
    assert old.headers["Location"] == "/services/afhub/join/Abcdefghij0123"


def _account(facility, cache={}):  # noqa: B006 (one account for the next= checks)
    if "acct" not in cache:
        name = f"nexter-{int(time.time() * 1000) % 10**8}"
        cache["acct"] = (name, facility.add_user(name))
    return cache["acct"]


def test_login_next_stays_on_site(facility):
    name, password = _account(facility)
    for outside in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        session = requests.Session()
        session.get(facility.hub_url + "login", params={"next": outside}, timeout=30)
        answer = session.post(
            facility.hub_url + "login",
            params={"next": outside},
            data={"username": name, "password": password, "_xsrf": session.cookies.get("_xsrf")},
            allow_redirects=False,
            timeout=30,
        )
        assert answer.status_code == 302
        target = urlparse(answer.headers["Location"])
        assert target.netloc in ("", urlparse(facility.url).netloc), answer.headers["Location"]
        assert not answer.headers["Location"].startswith("//")


@pytest.mark.parametrize(
    "path",
    [
        "static/../app.py",
        "static/%2e%2e/app.py",
        "static/..%2fapp.py",
        "static/%2e%2e%2fapp.py",
        "static/%2E%2E%2F%2E%2E%2Fsettings.py",
        "static//etc/passwd",
    ],
)
def test_static_refuses_traversal(facility, path):
    answer = requests.get(pages(facility) + path, allow_redirects=False, timeout=30)
    assert answer.status_code in (301, 302, 400, 403, 404), answer.status_code
    assert "def make_app" not in answer.text
    assert "root:" not in answer.text
    assert requests.get(pages(facility) + "static/afhub.js", timeout=30).status_code == 200


def test_group_admin_manages_a_group_in_the_browser(facility, world, browser):
    alice = log_in(browser, facility, *world.alice)
    page, top = alice.page, world.top
    page.goto(pages(facility) + "groups")
    tree = page.locator("#afhub-tree").inner_text().splitlines()
    assert f"{top}/a admin" in tree  # her group, full path: she cannot see its parent
    assert not [row for row in tree if row.startswith(f"{top}/b")]  # nor its sibling
    nav = page.locator("#thenavbar").inner_text()
    assert [label for label in ("Groups", "My usage", "Resources", "Services") if label in nav] == [
        "Groups",
        "My usage",
        "Resources",
        "Services",
    ]
    menu = page.locator("#thenavbar .dropdown-menu a.dropdown-item")
    assert {"facility", "fitting", "dask-gateway"} <= set(menu.all_inner_texts())
    alice.shot("groups")
    page.click(f"a[href$='groups/{top}/a']")
    page.wait_for_selector("#afhub-members")
    # what alice may do on her own group: members, subgroups, invitations; not delete/move
    assert page.locator("form[data-action=delete]").count() == 0
    assert page.locator("form[data-action=move]").count() == 0
    page.fill("form[data-action=create-subgroup] input[name=name]", "sub")
    page.click("form[data-action=create-subgroup] button")
    page.wait_for_url(f"**/groups/{top}/a/sub")
    assert page.locator("form[data-action=delete]").count() == 1  # below her group: she may
    page.goto(pages(facility) + f"groups/{top}/a")
    page.fill("form[data-action=add-member] input[name=user]", world.bob[0])
    page.click("form[data-action=add-member] button")
    page.wait_for_selector(f"td.afhub-user:text-is('{world.bob[0]}')")
    page.fill("form[data-action=invite] input[name=email]", "student@example.org")
    page.fill("form[data-action=invite] input[name=uses]", "2")
    page.click("form[data-action=invite] button")
    link = page.locator("#afhub-join-link").input_value()
    assert re.fullmatch(rf"{re.escape(facility.url[:-1])}/services/afhub/join/[\w-]+", link)
    page.click(".afhub-copy")
    page.wait_for_selector(".afhub-copy:text-is('Copied')")
    alice.shot("group")
    page.goto(pages(facility) + f"groups/{top}/a")
    assert "student@example.org" in page.locator("#afhub-invitations").inner_text()
    assert page.locator("#afhub-invitations td.afhub-joined").inner_text() == "nobody yet"
    page.click("form[data-action=revoke] button")
    page.wait_for_selector("#afhub-invitations")
    assert "revoked" in page.locator("#afhub-invitations").inner_text()
    # remove a member; make a subgroup, move it under another, delete it
    page.click(
        f"tr:has(td.afhub-user:text-is('{world.bob[0]}')) form[data-action=remove-member] button"
    )
    page.wait_for_selector("#afhub-members")
    assert world.bob[0] not in page.locator("#afhub-members").inner_text()
    page.fill("form[data-action=create-subgroup] input[name=name]", "sub2")
    page.click("form[data-action=create-subgroup] button")
    page.wait_for_url(f"**/groups/{top}/a/sub2")
    page.select_option("form[data-action=move] select[name=parent]", f"{top}/a/sub")
    page.click("form[data-action=move] button")
    page.wait_for_url(f"**/groups/{top}/a/sub/sub2")
    page.click("form[data-action=delete] button")
    page.wait_for_url("**/services/afhub/groups")
    assert world.api("GET", f"groups/{top}/a/sub/sub2").status_code == 404
    assert alice.errors == []


def test_names_with_html_render_as_text_and_refusals_show_the_api_message(facility, world, browser):
    alice = log_in(browser, facility, *world.alice)
    page = alice.page
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(pages(facility) + f"groups/{world.top}/a")
    evil = "<img src=x onerror=alert(1)><script>alert(2)</script>"
    page.fill("form[data-action=create-subgroup] input[name=name]", evil)
    page.click("form[data-action=create-subgroup] button")
    error = page.locator("#afhub-error")
    error.wait_for()
    assert "<img src=x" in error.inner_text()  # the API's message, as text
    assert page.locator("#afhub-error img, #afhub-error script").count() == 0
    assert dialogs == []
    # adding a person who never logged in: the API's message, with what to do
    page.goto(pages(facility) + f"groups/{world.top}/a")
    page.fill("form[data-action=add-member] input[name=user]", "never-here")
    page.click("form[data-action=add-member] button")
    page.wait_for_selector("#afhub-error:has-text('never-here')")
    assert "never logged in" in page.locator("#afhub-error").inner_text()
    assert "invitation" in page.locator("#afhub-error").inner_text()
    # a member asking for a sibling group's page: 403 with the API's reason
    page.goto(pages(facility) + f"groups/{world.top}/b")
    assert page.locator("h1").inner_text().startswith("403")
    assert "may not view group" in page.locator("#afhub-message").inner_text()
    alice.shot("error")
    assert [e for e in alice.errors if not e.startswith(FAILED_LOAD)] == []


def test_forms_need_xsrf(facility, world, browser):
    alice = log_in(browser, facility, *world.alice)
    alice.page.goto(pages(facility) + f"groups/{world.top}/a")
    forged = alice.page.request.post(
        pages(facility) + f"groups/{world.top}/a",
        form={"action": "create-subgroup", "name": "forged"},
        max_redirects=0,
    )
    assert forged.status == 403, forged.status
    assert world.api("GET", f"groups/{world.top}/a/forged").status_code == 404


def test_member_sees_usage_resources_and_joins_by_link(facility, world, browser):
    bob = log_in(browser, facility, *world.bob)
    page = bob.page
    page.goto(pages(facility) + "usage")
    limits = page.locator(".afhub-limits").first.inner_text()
    assert "gpu_hours" in limits
    assert "/ 5" in limits
    assert "Nothing of yours is running" in page.content()
    bob.shot("usage")
    page.goto(pages(facility) + "resources")
    row = page.locator("#afhub-resources tr", has_text=f"{world.top}-a100").inner_text()
    assert "8 / 8" in row  # free now / total
    assert f"{world.top}/b" in row  # through his group
    bob.shot("resources")
    created = world.api("POST", f"groups/{world.top}/-/invitations", json={"uses": 2}).json()
    assert created["join_url"].startswith("/services/afhub/join/")
    page.goto(facility.url + created["join_url"].lstrip("/"))
    assert (
        f"{world.bob[0]} joined {world.top} as member"
        in page.locator("#afhub-message").inner_text()
    )
    bob.shot("join")
    again = page.goto(facility.url + created["join_url"].lstrip("/"))
    assert again.status in (404, 409, 410), again.status
    assert page.locator("h1").inner_text() == "Invitation not accepted"
    assert [e for e in bob.errors if not e.startswith(FAILED_LOAD)] == []
    # the group's admin sees who joined by it, and when; a name with HTML in it as text
    evil = "<img src=x onerror=alert(1)>"
    stores = Stores.open(f"sqlite:///{facility.home / 'afhub.sqlite'}", migrate=False)
    try:
        stores.groups.ensure_user(evil)  # as a login with such a name would
        stores.invitations.redeem(created["token"], user=evil)
    finally:
        stores.close()
    admin = log_in(browser, facility, "admin", facility.admin_password)
    dialogs: list[str] = []
    admin.page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    admin.page.goto(pages(facility) + f"groups/{world.top}")
    joined = admin.page.locator(f"tr[data-invitation='{created['id']}'] td.afhub-joined")
    assert joined.locator(".afhub-joined-user").all_inner_texts() == [world.bob[0], evil]
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", joined.inner_text())
    assert joined.locator("img").count() == 0
    assert dialogs == []
    assert admin.errors == []


def test_no_404_from_the_hubs_service_checks(facility):
    """The hub checks each service's root every minute; it used to log a 404 there."""
    deadline = time.monotonic() + 75
    pattern = re.compile(r"(\d{3}) GET /services/facility/ \(")
    while time.monotonic() < deadline:
        seen = pattern.findall(facility.log_path.read_text(errors="replace"))
        if seen:
            assert set(seen) == {"302"}, seen
            return
        time.sleep(2)
    pytest.fail("the hub did not check the facility service's root within 75 s")


def test_usage_shows_what_runs_and_what_it_costs(facility, world, browser):
    """A running server of the viewer's, with its cores per hour, on My usage."""
    session = facility.login(*world.alice)
    session.start_server()
    try:
        alice = log_in(browser, facility, *world.alice)
        alice.page.goto(pages(facility) + "usage")
        running = alice.page.locator("#afhub-running tbody tr").all_inner_texts()
        assert len(running) == 1, running
        assert running[0].startswith("server\t(default)")
        assert re.search(r"\b\d+(\.\d+)? core-hours", running[0]), running[0]
        assert alice.errors == []
    finally:
        session.stop_server()
