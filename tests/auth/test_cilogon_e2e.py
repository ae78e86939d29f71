"""The CILogon code flow end to end: a real facility (``afhub up``) switched to CILogon with
``AFHUB_AUTHENTICATOR=cilogon``, against a real OpenID Connect provider on loopback.

One facility serves every test of this module; it runs under the base URL ``/af/`` so
that "stays under the hub's path prefix" means something.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from urllib.parse import parse_qs, unquote, urljoin, urlsplit

import pytest
import requests
import yaml

from tests.auth.oidc import cilogon_login
from tests.facility import PROJECT_ROOT, Facility

pytestmark = [pytest.mark.facility, pytest.mark.slow]

IDP_A = "https://idp.a.edu/idp/shibboleth"
IDP_B = "https://login.b.edu/idp/shibboleth"
IDP_C = "https://idp.c.edu/idp/shibboleth"
IDP_EVIL = "https://idp.evil.example/idp/shibboleth"

SERVICE_TOKEN = secrets.token_hex(16)
CLIENT_ID = "cilogon:/client_id/afhub-test"
BASE = "/af/"


class PrefixedFacility(Facility):
    """The lead's ``Facility`` with JupyterHub's ``base_url`` set to :data:`BASE`."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{BASE}"


def afhub_config(provider, secret_file, port: int) -> dict:
    """The afhub YAML config of the facility under test (a traitlets config by class)."""
    return {
        "JupyterHub": {
            # the base URL goes into bind_url: JupyterHub recomputes bind_url from
            # base_url, ip and port when base_url alone is set
            "bind_url": f"http://127.0.0.1:{port}{BASE}",
            # land on the hub's home page after login instead of spawning a server
            "redirect_to_server": False,
            "services": [{"name": "auth-tests", "api_token": SERVICE_TOKEN}],
            "load_roles": [
                {
                    "name": "auth-tests",
                    "scopes": ["list:users", "read:users", "list:groups", "read:groups"],
                    "services": ["auth-tests"],
                }
            ],
        },
        "AfhubCILogonAuthenticator": {
            **provider.endpoints(),
            "client_secret_file": str(secret_file),
            "identity_providers": {
                IDP_A: {
                    "name": "University A",
                    "strip_domain": "a.edu",
                    "allowed_email_domains": ["a.edu"],
                },
                IDP_B: {
                    "name": "University B",
                    "prefix": "b",
                    "strip_domain": "b.edu",
                    "allow_all": True,
                },
                IDP_C: {
                    "name": "College C",
                    "prefix": "c",
                    "username_claim": "email",
                    "allowed_email_domains": ["c.edu"],
                },
            },
            "group_map": {"CO:COU:afhub-admins:members:active": "af-admins"},
            "group_prefixes": ["CO:COU:afhub-"],
            "admin_groups": ["af-admins"],
        },
    }


@pytest.fixture(scope="module")
def hub(oidc_provider, tmp_path_factory):
    home = tmp_path_factory.mktemp("cilogon-facility")
    secret_file = home / "client-secret"
    secret_file.write_text("not-so-secret\n")
    facility = PrefixedFacility(
        home, env={"AFHUB_AUTHENTICATOR": "cilogon", "OAUTH_CLIENT_ID": CLIENT_ID}
    )
    facility.config = afhub_config(oidc_provider, secret_file, facility.port)
    try:
        facility.start(timeout=30)
        yield facility
    finally:
        facility.stop()
    assert not facility.leftover, f"processes left after stop: {facility.leftover}"


def api(hub, path: str) -> requests.Response:
    """A hub REST call with the test service's token."""
    return requests.get(
        urljoin(hub.api_url, path),
        headers={"Authorization": f"token {SERVICE_TOKEN}"},
        timeout=30,
    )


def user_names(hub) -> set[str]:
    return {user["name"] for user in api(hub, "users").json()}


def whoami(hub, session: requests.Session) -> dict:
    """The logged-in user of a browser session (cookie plus XSRF header)."""
    session.get(urljoin(hub.hub_url, "home"), timeout=30)
    xsrf = session.cookies.get("_xsrf", path=urlsplit(hub.hub_url).path)
    response = session.get(
        urljoin(hub.api_url, "user"), headers={"X-XSRFToken": xsrf or ""}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_allowed_idp_logs_in(hub, oidc_provider):
    sub = oidc_provider.add_user(
        "alice-a",
        {
            "idp": IDP_A,
            "eppn": "alice@a.edu",
            "email": "alice@a.edu",
            "isMemberOf": ["CO:COU:afhub-admins:members:active", "CO:COU:afhub-physics"],
        },
    )
    result = cilogon_login(hub.hub_url, sub, next_query=BASE + "hub/home")
    # CILogon is asked to pre-select the home IdP and offer only the listed ones
    selected = parse_qs(urlsplit(result.authorize_url).query)["selected_idp"][0].split(",")
    assert selected[0] == IDP_A
    assert sorted(selected) == sorted([IDP_A, IDP_B, IDP_C])
    assert result.callback_status == 302
    assert result.locations[0] == BASE + "hub/home"
    me = whoami(hub, result.session)
    assert me["name"] == "alice"
    assert me["admin"] is True  # through admin_groups
    assert sorted(me["groups"]) == ["af-admins", "physics"]


def test_unlisted_idp_gets_403(hub, oidc_provider):
    sub = oidc_provider.add_user(
        "eve-evil",
        {"idp": IDP_EVIL, "eppn": "eve@evil.example", "email": "eve@evil.example"},
    )
    before = user_names(hub)
    result = cilogon_login(hub.hub_url, sub)
    assert result.callback_status == 403
    assert f"identity provider {IDP_EVIL} is not allowed" in result.callback_text
    assert result.locations == []
    assert user_names(hub) == before


def test_unlisted_idp_with_allowed_email_domain_is_denied(hub, oidc_provider):
    """a.edu addresses are allowed, but only for users of University A's IdP."""
    sub = oidc_provider.add_user(
        "mallory-evil",
        {"idp": IDP_EVIL, "eppn": "mallory@a.edu", "email": "mallory@a.edu"},
    )
    before = user_names(hub)
    result = cilogon_login(hub.hub_url, sub)
    assert result.callback_status == 403
    assert user_names(hub) == before
    assert "mallory" not in user_names(hub)


def test_listed_idp_with_another_idps_email_domain_is_denied(hub, oidc_provider):
    """College C allows c.edu; an a.edu address from C is not enough."""
    sub = oidc_provider.add_user(
        "trudy-c", {"idp": IDP_C, "email": "trudy@a.edu", "eppn": "trudy@a.edu"}
    )
    result = cilogon_login(hub.hub_url, sub)
    assert result.callback_status == 403
    assert "c:trudy@a.edu" not in user_names(hub)

    sub = oidc_provider.add_user("carl-c", {"idp": IDP_C, "email": "carl@c.edu"})
    result = cilogon_login(hub.hub_url, sub)
    assert result.callback_status == 302
    assert whoami(hub, result.session)["name"] == "c:carl@c.edu"


def test_same_local_name_from_two_idps_gives_two_accounts(hub, oidc_provider):
    """eppn alice@a.edu (home IdP) and alice@b.edu (prefix b) both strip to "alice"."""
    sub_a = oidc_provider.add_user(
        "alice-a2", {"idp": IDP_A, "eppn": "alice@a.edu", "email": "alice@a.edu"}
    )
    sub_b = oidc_provider.add_user(
        "alice-b", {"idp": IDP_B, "eppn": "alice@b.edu", "email": "alice@b.edu"}
    )
    login_a = cilogon_login(hub.hub_url, sub_a)
    login_b = cilogon_login(hub.hub_url, sub_b)
    assert (login_a.callback_status, login_b.callback_status) == (302, 302)
    name_a = whoami(hub, login_a.session)["name"]
    name_b = whoami(hub, login_b.session)["name"]
    assert (name_a, name_b) == ("alice", "b:alice")
    assert {"alice", "b:alice"} <= user_names(hub)
    # no group or admin right leaks from one account to the other
    assert api(hub, "users/b:alice").json()["admin"] is False


def test_home_idp_value_outside_its_domain_is_refused(hub, oidc_provider):
    """University A asserting bob@b.edu must not become "bob" nor "b:bob"."""
    sub = oidc_provider.add_user("bob-a", {"idp": IDP_A, "eppn": "bob@b.edu", "email": "bob@a.edu"})
    result = cilogon_login(hub.hub_url, sub)
    assert result.callback_status == 403
    assert "not in its own domain a.edu" in result.callback_text
    assert not {"bob", "b:bob", "bob@b.edu"} & user_names(hub)


def test_group_claims_become_hub_groups(hub, oidc_provider):
    claims = {
        "idp": IDP_B,
        "eppn": "carol@b.edu",
        "email": "carol@b.edu",
        # a comma-separated string, as some IdPs send it
        "isMemberOf": "CO:COU:afhub-physics, CO:COU:afhub-cms,unrelated:group",
    }
    sub = oidc_provider.add_user("carol-b", claims)
    result = cilogon_login(hub.hub_url, sub)
    assert result.callback_status == 302
    groups = {g["name"]: g for g in api(hub, "groups").json()}
    assert "b:carol" in groups["physics"]["users"]
    assert "b:carol" in groups["cms"]["users"]
    assert "unrelated:group" not in groups
    assert sorted(api(hub, "users/b:carol").json()["groups"]) == ["cms", "physics"]

    # the claim is the truth at each login: a group left at the IdP is left on the hub
    oidc_provider.add_user(sub, {**claims, "isMemberOf": ["CO:COU:afhub-cms"]})
    result = cilogon_login(hub.hub_url, sub)
    assert result.callback_status == 302
    assert api(hub, "users/b:carol").json()["groups"] == ["cms"]


OFFSITE_NEXT = [
    "//evil.example",
    "/\\evil.example",
    "https://evil.example",
    "https://evil.example/af/hub/home",
    "%2F%2Fevil.example",
    "/%5Cevil.example",
    "%2F%5Cevil.example",
    "%5C%5Cevil.example",
    "https%3A%2F%2Fevil.example",
    "%252F%252Fevil.example",
    "///evil.example",
    "/%09/evil.example",
    "https:evil.example",
    "//127.0.0.1@evil.example",
    "/af/..%2F..%2F%2Fevil.example",
    "javascript:alert(1)",
]


@pytest.fixture(scope="module")
def redirect_user(oidc_provider):
    return oidc_provider.add_user(
        "dave-a", {"idp": IDP_A, "eppn": "dave@a.edu", "email": "dave@a.edu"}
    )


@pytest.mark.parametrize("next_query", OFFSITE_NEXT)
def test_next_never_redirects_off_site(hub, redirect_user, next_query):
    result = cilogon_login(hub.hub_url, redirect_user, next_query=next_query)
    assert result.callback_status == 302
    hub_netloc = urlsplit(hub.url).netloc
    for location in result.locations:
        assert "\\" not in location, location
        assert not location.startswith("//"), location
        parts = urlsplit(location)
        assert parts.scheme in ("", "http"), location
        assert parts.netloc in ("", hub_netloc), location
        assert parts.path.startswith(BASE), location
        # no dot segments, literal or percent-encoded, that a browser would resolve
        assert not {".", ".."} & set(unquote(parts.path).split("/")), location
    assert urlsplit(result.final_url).netloc == hub_netloc
    # and the login itself worked
    assert whoami(hub, result.session)["name"] == "dave"


def test_on_site_next_is_kept(hub, redirect_user):
    result = cilogon_login(hub.hub_url, redirect_user, next_query="/af/hub/token")
    assert result.locations[0] == "/af/hub/token"


def test_merge_prone_config_refuses_to_start(tmp_path, oidc_provider):
    """Two IdPs without a prefix could give one account to two people: no start."""
    config = afhub_config(oidc_provider, tmp_path / "secret", 1)
    (tmp_path / "secret").write_text("x")
    del config["AfhubCILogonAuthenticator"]["identity_providers"][IDP_B]["prefix"]
    (tmp_path / "afhub.yaml").write_text(yaml.safe_dump(config))
    facility = Facility(tmp_path, env={"AFHUB_AUTHENTICATOR": "cilogon"})
    run = subprocess.run(
        [sys.executable, "-m", "afhub", "up"],
        env={**facility.env, "OAUTH_CLIENT_ID": CLIENT_ID},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert "more than one IdP has no prefix" in run.stdout + run.stderr
