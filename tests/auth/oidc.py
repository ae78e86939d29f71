"""Helpers for the CILogon tests: a real OpenID Connect provider on loopback, and the
code flow driven as a browser does.

``oidc-provider-mock`` plays CILogon: users (their claims, including ``idp``, ``eppn`` and
``isMemberOf``) are added at run time with ``PUT /users/<sub>``, and its authorize page
logs in whichever ``sub`` its form submits.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

from tests.facility import free_port


class OidcProvider:
    """``python -m oidc_provider_mock`` in a subprocess."""

    def __init__(self, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> OidcProvider:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "oidc_provider_mock",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"OIDC provider exited:\n{self.log_path.read_text()}")
            try:
                if requests.get(self.well_known, timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"OIDC provider not up after {timeout} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    @property
    def well_known(self) -> str:
        return f"{self.url}/.well-known/openid-configuration"

    def endpoints(self) -> dict[str, str]:
        """What an OAuthenticator needs to point at this provider instead of cilogon.org."""
        meta = requests.get(self.well_known, timeout=10).json()
        return {
            "authorize_url": meta["authorization_endpoint"],
            "token_url": meta["token_endpoint"],
            "userdata_url": meta["userinfo_endpoint"],
        }

    def add_user(self, sub: str, claims: dict) -> str:
        """Create or replace user ``sub`` with ``claims``; returns ``sub``."""
        response = requests.put(f"{self.url}/users/{sub}", json=claims, timeout=10)
        assert response.status_code == 204, response.text
        return sub


@dataclass
class LoginResult:
    """What happened in one CILogon code flow, from ``oauth_login`` to the last redirect."""

    session: requests.Session
    authorize_url: str
    callback_status: int
    callback_text: str
    # every Location header after the provider sent us back to the hub, in order
    locations: list[str] = field(default_factory=list)
    final_url: str = ""


def cilogon_login(
    hub_url: str, sub: str, next_query: str | None = None, max_redirects: int = 10
) -> LoginResult:
    """Run the whole code flow as a browser does, for the provider's user ``sub``.

    ``hub_url`` is the hub's ``.../hub/`` URL.  ``next_query`` is put in the query string
    as given (so encoded forms can be tested).  Redirects after the callback are followed
    by hand, only on the hub's own host, and recorded.
    """
    session = requests.Session()
    login_url = urljoin(hub_url, "oauth_login")
    if next_query is not None:
        login_url += "?next=" + next_query
    response = session.get(login_url, allow_redirects=False, timeout=30)
    assert response.status_code == 302, (response.status_code, response.text[:500])
    authorize_url = response.headers["Location"]

    # The provider's page: a form that logs in whichever ``sub`` it submits.
    page = requests.get(authorize_url, timeout=30)
    assert page.status_code == 200, page.text[:500]
    assert 'name="sub"' in page.text
    response = requests.post(authorize_url, data={"sub": sub}, allow_redirects=False, timeout=30)
    assert response.status_code == 302, response.text[:500]
    callback_url = response.headers["Location"]
    hub = urlsplit(hub_url)
    callback = urlsplit(callback_url)
    assert (callback.netloc, callback.path) == (hub.netloc, hub.path + "oauth_callback")
    assert "code" in parse_qs(callback.query)

    response = session.get(callback_url, allow_redirects=False, timeout=30)
    result = LoginResult(session, authorize_url, response.status_code, response.text)
    url = callback_url
    while response.is_redirect and len(result.locations) < max_redirects:
        location = response.headers["Location"]
        result.locations.append(location)
        url = urljoin(url, location)
        if urlsplit(url).netloc != hub.netloc:
            break  # never follow off-site; the caller's checks fail on it
        response = session.get(url, allow_redirects=False, timeout=30)
    result.final_url = url
    return result
