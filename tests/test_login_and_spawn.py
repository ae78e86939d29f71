"""Issue 2, end to end: log in, start a server, reach JupyterLab, run code, stop."""

from __future__ import annotations

import os
import stat
from urllib.parse import urljoin, urlparse

import pytest
import requests

from tests.facility import run_in_kernel

pytestmark = pytest.mark.facility


def test_admin_password_generated_private_and_works(facility):
    path = facility.home / "admin-password"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(facility.admin_password) >= 20
    session = facility.login("admin", facility.admin_password)
    me = session.api("GET", "user").json()
    assert me["name"] == "admin"
    assert me["admin"] is True


def test_wrong_password_and_unknown_user_are_refused(facility, new_user):
    name, password = new_user()
    for username, pw in ((name, password + "x"), ("nobody-here", password), (name, "")):
        from tests.facility import HubSession

        response = HubSession(facility).login(username, pw)
        assert response.status_code == 403, (username, response.status_code)


def test_users_cli_lists_and_refuses_duplicates_and_bad_names(facility, new_user):
    name, _ = new_user()
    assert name in facility.afhub("users", "list").stdout.split()
    duplicate = facility.afhub("users", "add", name, check=False)
    assert duplicate.returncode == 2
    assert "exists already" in duplicate.stderr
    for bad in ("", "Bad Name", "../etc", "a" * 70, "<script>"):
        result = facility.afhub("users", "add", bad, check=False)
        assert result.returncode == 2, bad
        assert "invalid username" in result.stderr, bad


def test_login_spawn_lab_kernel_stop(facility, new_user):
    name, password = new_user("physicist")
    session = facility.login(name, password)
    server = session.start_server()
    assert server["ready"]
    # JupyterLab is the UI a user lands in
    lab = session.get(urljoin(facility.url, f"user/{name}/lab"), timeout=30)
    assert lab.status_code == 200
    assert "JupyterLab" in lab.text
    token = session.new_token("kernel test")
    out = run_in_kernel(facility.url, name, token, "import os; print(6 * 7, os.getcwd())")
    answer, cwd = out.split()
    assert answer == "42"
    assert cwd.startswith(str(facility.home / "homes"))
    session.stop_server()
    assert (
        requests.get(
            urljoin(facility.url, f"user/{name}/api/status"),
            headers={"Authorization": f"token {token}"},
            allow_redirects=False,
            timeout=10,
        ).status_code
        != 200
    )


def test_similar_usernames_get_distinct_homes(facility):
    a = facility.add_user("user")
    b = facility.add_user("user-hyphen")
    homes = []
    for name, password in (("user", a), ("user-hyphen", b)):
        session = facility.login(name, password)
        session.start_server()
        token = session.new_token("home")
        homes.append(run_in_kernel(facility.url, name, token, "import os; print(os.getcwd())"))
        session.stop_server()
    assert homes[0].strip() != homes[1].strip()


@pytest.mark.parametrize(
    "next_url",
    [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
        "%2F%2Fevil.example",
        "/%5Cevil.example",
        "https:%2F%2Fevil.example",
        "///evil.example/",
        "\\\\evil.example",
    ],
)
def test_next_never_redirects_off_site(facility, new_user, next_url):
    name, password = new_user("redir")
    from tests.facility import HubSession

    session = HubSession(facility)
    response = session.login(name, password, next_url=next_url)
    assert response.status_code == 302
    location = response.headers["Location"]
    parsed = urlparse(urljoin(facility.hub_url + "login", location))
    assert parsed.netloc == urlparse(facility.url).netloc, location
    assert "evil.example" not in parsed.netloc


def test_cross_origin_spawn_post_is_refused(facility, new_user):
    name, password = new_user("csrf")
    session = facility.login(name, password)
    # A form on another site posting to /hub/spawn: the browser sends the cookie but
    # cannot know the _xsrf token.
    response = session.post(
        urljoin(facility.hub_url, f"spawn/{name}"),
        data={},
        headers={"Origin": "https://evil.example", "Referer": "https://evil.example/x"},
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code == 403
    model = session.api("GET", f"users/{name}").json()
    assert model["servers"] == {}
    assert model["pending"] is None
