"""Named servers end to end in the session facility: each one is its own ledger interval,
counted in the group's ``max_servers`` and charged separately, up to a per-user limit."""

from __future__ import annotations

import csv
import io
import time
import uuid
from urllib.parse import urljoin

import pytest
import requests

pytestmark = [pytest.mark.facility, pytest.mark.slow]

#: the facility's default ``named_server_limit`` (AFHUB_NAMED_SERVER_LIMIT)
LIMIT = 3


class FacilityAPI:
    """The facility API (``/services/facility/api/``) with one token."""

    def __init__(self, facility, token: str):
        self.base = urljoin(facility.url, "services/facility/api/")
        self.headers = {"Authorization": f"token {token}"}

    def __call__(self, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(
            method, self.base + path, headers=self.headers, timeout=30, **kwargs
        )


def server_log(facility, user: str) -> str:
    """The hub's log lines about this user's servers and the ledger (for a failure)."""
    lines = facility.log_path.read_text(errors="replace").splitlines()
    return "\n".join(line for line in lines if user in line or "ledger interval" in line)[-8000:]


def test_named_servers_are_limited_counted_and_charged_separately(facility):
    admin = FacilityAPI(facility, facility.admin_token())
    group = f"named-{uuid.uuid4().hex[:8]}"
    assert admin("POST", "groups", json={"path": group}).status_code == 201
    assert admin("PUT", f"groups/{group}/-/quota", json={"max_servers": 2}).status_code == 200
    user = f"multi-{uuid.uuid4().hex[:8]}"
    session = facility.login(user, facility.add_user(user))
    member = admin("PUT", f"groups/{group}/-/members/{user}", json={"role": "member"})
    assert member.status_code in (200, 201), member.text
    options = {"charge_to": group}

    def running() -> set[str]:
        return set(session.api("GET", f"users/{user}").json()["servers"])

    try:
        session.start_server("", options)
        session.start_server("a", options)
        assert running() == {"", "a"}

        # the group's max_servers counts the default and the named server: a third is
        # refused with afhub's quota message before anything starts
        refused = session.api("POST", f"users/{user}/servers/b", json=options)
        assert refused.status_code == 403, refused.text
        message = refused.json()["message"]
        assert f"Group '{group}' is at its limit of 2 concurrent servers: 2 of 2 in use" in message
        assert running() == {"", "a"}

        # the per-user limit on named servers (JupyterHub's own check, before any spawn):
        # fill up to the limit with servers created but not started, then one more
        existing = session.api("GET", f"users/{user}", params={"include_stopped_servers": 1})
        named = {n for n in existing.json()["servers"] if n}
        for i in range(LIMIT - len(named)):
            created = session.api("PUT", f"users/{user}/servers/spare{i}", json={})
            assert created.status_code in (200, 201), created.text
        over = session.api("POST", f"users/{user}/servers/one-too-many", json=options)
        assert over.status_code == 400, over.text
        assert over.json()["message"].startswith(
            f"User {user} already has the maximum of {LIMIT} named servers."
        )

        # stopping one frees a slot in the group's quota
        session.stop_server("a")
        session.start_server("b", options)
        assert running() == {"", "b"}

        # each server is its own ledger row, named, charged to the group; a new server's
        # interval turns running when the hub has seen it ready (polled by the spawner)
        deadline = time.monotonic() + 20
        while True:
            usage = admin("GET", f"groups/{group}/-/usage", params={"since": "2000-01-01"})
            assert usage.status_code == 200, usage.text
            rows = {r["server_name"]: r for r in usage.json()["intervals"] if r["user"] == user}
            if rows.get("b", {}).get("state") == "running" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert set(rows) == {"", "a", "b"}, server_log(facility, user)
        assert rows["a"]["state"] == "closed"
        assert rows["a"]["stop"] is not None
        assert rows[""]["state"] == rows["b"]["state"] == "running"
        assert {r["group"] for r in rows.values()} == {group}
        assert len({r["id"] for r in rows.values()}) == 3
        # the CLI shows the same rows with the server name
        out = facility.afhub("usage", "--group", group, "--since", "2000-01-01", "--csv").stdout
        cli_rows = [r for r in csv.DictReader(io.StringIO(out)) if r["user"] == user]
        assert sorted(r["server_name"] for r in cli_rows) == ["", "a", "b"]
    finally:
        for name in running():
            session.stop_server(name)
