"""The facility API as a hub-managed service of a real hub: identity from real tokens."""

from __future__ import annotations

import time
from urllib.parse import urljoin

import pytest
import requests

from tests.facility import Facility

pytestmark = [pytest.mark.facility, pytest.mark.slow]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A facility as ``afhub up`` runs it: the hub registers the facility API."""
    fac = Facility(tmp_path_factory.mktemp("facility-api-hub"))
    fac.start()
    yield fac
    fac.stop()
    fac.cleanup_orphans()


def api(fac, token, method, path, **kwargs):
    headers = {"Authorization": f"token {token}"} if token else {}
    url = urljoin(fac.url, "services/facility/api/" + path)
    for _ in range(40):  # the service starts a moment after the hub
        try:
            return requests.request(method, url, headers=headers, timeout=30, **kwargs)
        except requests.ConnectionError:
            time.sleep(0.25)
    raise AssertionError("facility API never answered")


def test_real_tokens_identify_callers_and_the_tree_authorizes(hub):
    admin = hub.admin_token()
    me = api(hub, admin, "GET", "users/me")
    assert me.status_code == 200, me.text
    assert me.json()["is_facility_admin"] is True  # a JupyterHub admin
    assert api(hub, None, "GET", "groups").status_code == 401
    forged = api(hub, "not-a-real-token", "GET", "groups")
    assert forged.status_code == 401
    assert forged.json()["status"] == 401

    for path in ["atlas", "atlas/higgs", "atlas/higgs/students", "cms"]:
        assert api(hub, admin, "POST", "groups", json={"path": path}).status_code == 201
    assert api(hub, admin, "PUT", "groups/atlas/higgs/-/quota", json={"gpu_hours": 50}).ok

    password = hub.add_user("hana")  # a local account, not logged in yet: she may be added
    assert api(hub, admin, "PUT", "groups/atlas/higgs/-/members/hana", json={"role": "admin"}).ok
    nobody = api(hub, admin, "PUT", "groups/atlas/higgs/-/members/nobody", json={})
    assert nobody.status_code == 404, nobody.text
    assert "never logged in" in nobody.json()["error"]
    assert "invitations" in nobody.json()["error"]
    hana = hub.login("hana", password).new_token("facility api")
    created = api(hub, hana, "POST", "groups/atlas/higgs/students/-/invitations", json={})
    assert created.status_code == 201, created.text
    assert api(hub, hana, "PUT", "groups/cms/-/quota", json={"gpu_hours": 1}).status_code == 403
    assert (
        api(hub, hana, "PATCH", "users/hana", json={"is_facility_admin": True}).status_code == 403
    )

    student_password = hub.add_user("sam")
    sam = hub.login("sam", student_password).new_token("facility api")
    joined = api(hub, sam, "POST", "invitations/redeem", json={"token": created.json()["token"]})
    assert joined.status_code == 200, joined.text
    assert api(hub, sam, "GET", "users/me").json()["groups"]["atlas/higgs/students"] == "member"
    assert api(hub, sam, "GET", "groups/atlas/higgs/-/usage").status_code == 403
    again = api(hub, sam, "POST", "invitations/redeem", json={"token": created.json()["token"]})
    assert again.status_code in (409, 410)


def test_invitation_link_in_a_browser_session(hub):
    """The student logs in to the hub and opens the link: OAuth with the service, then joined."""
    admin = hub.admin_token()
    assert api(hub, admin, "POST", "groups", json={"path": "lhcb"}).status_code == 201
    created = api(hub, admin, "POST", "groups/lhcb/-/invitations", json={"uses": 1}).json()
    password = hub.add_user("lena")
    browser = hub.login("lena", password)
    page = browser.get(urljoin(hub.url, created["join_url"].lstrip("/")), timeout=30)
    assert page.status_code == 200, page.text[:500]
    assert "lena joined lhcb as member" in page.text
    # the browser now holds the pages' OAuth cookie (the join page is afhub.web's): a form
    # without the XSRF token changes nothing
    forged = browser.post(
        urljoin(hub.url, "services/afhub/groups"), data={"name": "lhcb-x"}, timeout=30
    )
    assert forged.status_code == 403
    assert browser.get(urljoin(hub.url, "services/afhub/groups"), timeout=30).ok
    again = browser.get(urljoin(hub.url, created["join_url"].lstrip("/")), timeout=30)
    assert again.status_code in (409, 410)
    assert "Invitation not accepted" in again.text
    anonymous = requests.get(
        urljoin(hub.url, created["join_url"].lstrip("/")), allow_redirects=False, timeout=30
    )
    assert anonymous.status_code == 302
    assert "/hub/api/oauth2/authorize" in anonymous.headers["Location"]
