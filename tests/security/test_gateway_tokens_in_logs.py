"""Issue 11: tokens in URLs are refused, and no log line ever holds a token.

Against the session facility: requests with tokens in the ``Authorization`` header (the
way that works) and in URLs (refused with a 400 that says what to send) to the Dask
gateway (API and dashboards), the facility API and the fitting service, and to the hub's
own API; then every log file under the facility's ``AFHUB_HOME/logs/`` and its captured
output (the hub, the proxy, every hub-managed service, the gateway's access log) are
searched for the token values.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

pytestmark = [pytest.mark.facility, pytest.mark.slow]


def log_files(facility) -> list[Path]:
    files = [facility.log_path]
    files += [p for p in (facility.home / "logs").rglob("*") if p.is_file()]
    return [p for p in files if p.exists()]


def test_tokens_in_urls_are_refused_and_never_logged(facility):
    name = f"logs{uuid.uuid4().hex[:6]}"
    token = facility.login(name, facility.add_user(name)).new_token("log test")
    forged = "forged" + uuid.uuid4().hex
    base = facility.url
    header = {"Authorization": f"token {token}"}

    # the way that works: the token in the header
    gateway = urljoin(base, "services/dask-gateway/api/v1/clusters/")
    facility_api = urljoin(base, "services/facility/api/users/me")
    fitting = urljoin(base, "services/fitting/api/jobs")
    for url in (gateway, facility_api, fitting):
        r = requests.get(url, headers=header, timeout=30)
        assert r.status_code == 200, (url, r.status_code, r.text[:200])

    # tokens in the URL: refused by afhub's services with a message that says what to send
    refused = [
        gateway,
        urljoin(base, "services/dask-gateway/clusters/anything/status"),
        facility_api,
        urljoin(base, "services/facility/api/groups"),
        fitting,
    ]
    for url in refused:
        for secret in (token, forged):
            for parameter in ("token", "access_token"):
                r = requests.get(url, params={parameter: secret}, timeout=30)
                assert r.status_code == 400, (url, parameter, r.status_code, r.text[:200])
                assert "tokens in URLs are refused" in r.json()["error"]
                assert "Authorization" in r.json()["error"]
    # the hub's own API (JupyterHub 6 ignores tokens in URLs for pages and its API)
    requests.get(urljoin(base, "hub/api/user"), params={"token": token}, timeout=30)
    requests.get(urljoin(base, "hub/home"), params={"token": token}, timeout=30)
    # forged tokens in headers are refused with 401 too
    for url in (gateway, facility_api, fitting):
        r = requests.get(url, headers={"Authorization": f"token {forged}"}, timeout=30)
        assert r.status_code == 401, (url, r.status_code)

    time.sleep(2)  # log lines written after the answers are flushed
    files = log_files(facility)
    assert any("dask-gateway" in p.read_text(errors="replace") for p in files), files
    found = []
    for path in files:
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if token in line or forged in line:
                found.append(f"{path.name}:{number}: {line[:300]}")
    assert not found, "tokens in the logs:\n" + "\n".join(found)


def test_oauth_codes_are_not_logged_by_the_services_callbacks(facility):
    """The pages' and the facility API's OAuth callbacks log their request line with the
    one-time ``?code=`` replaced (JupyterHub's callback handler logs the full URI)."""
    name = f"code{uuid.uuid4().hex[:6]}"
    session = facility.login(name, facility.add_user(name))
    # a real login to the pages service: hub authorize -> the pages' callback with a code
    page = session.get(urljoin(facility.url, "services/afhub/groups"), timeout=30)
    assert page.status_code == 200, page.status_code
    callbacks = [
        r.headers["Location"]
        for r in page.history
        if urlsplit(r.headers.get("Location", "")).path.endswith("/oauth_callback")
    ]
    assert callbacks, [r.headers.get("Location") for r in page.history]
    codes = [parse_qs(urlsplit(url).query)["code"][0] for url in callbacks]
    # the facility API's callback, with a code of our own (refused, but its line is logged)
    made_up = "madeup" + uuid.uuid4().hex
    refused = session.get(
        urljoin(facility.url, "services/facility/oauth_callback"),
        params={"code": made_up, "state": "x"},
        allow_redirects=False,
        timeout=30,
    )
    assert refused.status_code >= 400, refused.status_code
    time.sleep(2)  # log lines written after the answers are flushed
    files = log_files(facility)
    assert any("oauth_callback" in p.read_text(errors="replace") for p in files), files
    found = [
        f"{path.name}:{number}: {line[:300]}"
        for path in files
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if made_up in line or any(code in line for code in codes)
    ]
    assert not found, "OAuth codes in the logs:\n" + "\n".join(found)
