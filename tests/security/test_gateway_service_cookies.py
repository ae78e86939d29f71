"""Issue 11, finding 4 as a class: every cookie afhub's services set is ``HttpOnly`` and
``SameSite=Lax`` with a path limited to the service. The Dask gateway's own cookies are
tested in ``test_gateway_dashboard.py``; here the OAuth cookies of the facility API and
the fitting service (JupyterHub's ``HubOAuth``, which sets no ``SameSite`` of its own),
through a real browser-like login on the session facility."""

from __future__ import annotations

import uuid
from urllib.parse import urljoin

import pytest

pytestmark = [pytest.mark.facility, pytest.mark.slow]

NAVIGATE = {"Accept": "text/html", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


def set_cookies(response) -> list[str]:
    """Every ``Set-Cookie`` of a response and of the redirects before it."""
    found = []
    for r in [*response.history, response]:
        found += r.raw.headers.getlist("Set-Cookie")
    return found


def test_service_oauth_cookies_are_httponly_samesite_and_path_limited(facility):
    name = f"cookie{uuid.uuid4().hex[:6]}"
    browser = facility.login(name, facility.add_user(name))
    # the pages' invitation page (a browser page: it logs the person in by OAuth)
    r = browser.get(
        urljoin(facility.url, f"services/afhub/join/{uuid.uuid4().hex}"), headers=NAVIGATE
    )
    assert r.status_code in (200, 404), (r.status_code, r.url)  # an unknown invitation
    cookies = [
        c
        for c in set_cookies(r)
        if "/services/afhub" in c
        and c.split(";")[0].split("=", 1)[1] not in ("", '""')
        and not c.startswith("_xsrf=")
    ]  # a cleared cookie needs no flags; the XSRF token is no credential and scripts of
    # the service's own pages read it (double submit), so it cannot be HttpOnly
    assert len(cookies) >= 2, set_cookies(r)  # the OAuth state, then the login
    for cookie in cookies:
        attributes = [a.strip().lower() for a in cookie.split(";")]
        assert "httponly" in attributes, cookie
        assert "samesite=lax" in attributes, cookie
        assert any(a.startswith("path=/services/afhub") for a in attributes), cookie
