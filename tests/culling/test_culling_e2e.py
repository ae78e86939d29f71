"""Idle culling in a real facility: idle servers (default and named) are stopped through
the hub by the culler service, their ledger intervals closed, named servers kept."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from afhub.stores.facade import Stores
from tests.facility import Facility

pytestmark = [pytest.mark.facility, pytest.mark.slow]

CPU_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def fac(tmp_path_factory):
    facility = Facility(
        tmp_path_factory.mktemp("culling-facility"),
        env={"AFHUB_CULL_TIMEOUT_CPU": str(CPU_TIMEOUT_S), "AFHUB_CULL_EVERY": "1"},
    )
    facility.start()
    yield facility
    facility.stop()
    facility.cleanup_orphans()


def test_idle_default_and_named_servers_are_culled_and_their_usage_closed(fac):
    session = fac.login("idler", fac.add_user("idler"))
    started_at = time.monotonic()
    for name in ("", "nb"):
        response = session.api("POST", f"users/idler/servers/{name}", json={})
        assert response.status_code in (201, 202), response.text
    # nobody uses them: the culler stops both once ready and idle past the timeout (it
    # leaves pending servers alone); they are not waited for here, so polling is no activity
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if session.api("GET", "users/idler").json()["servers"] == {}:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"idle servers were not culled:\n{fac.log_tail()}")
    assert time.monotonic() - started_at >= CPU_TIMEOUT_S

    # stopped, not deleted: the named server stays the user's, ready to start again
    kept = session.api("GET", "users/idler", params={"include_stopped_servers": "1"}).json()
    assert kept["servers"]["nb"]["stopped"] is True

    # the spawner's post-stop hook closed both ledger intervals, each charged its run time
    stores = Stores.open(f"sqlite:///{fac.home / 'afhub.sqlite'}", migrate=False)
    try:
        report = stores.ledger.usage("users", datetime(2000, 1, 1, tzinfo=UTC))
        rows = {i.server_name: i for i in report.intervals if i.user == "idler"}
        assert not [i for i in stores.ledger.open_intervals("server") if i.user == "idler"]
    finally:
        stores.close()
    assert set(rows) == {"", "nb"}
    for interval in rows.values():
        assert interval.state == "closed" and interval.stop is not None
        assert interval.note == "stopped"  # stopped through the hub, charged up to the stop
        assert interval.start is not None and interval.stop > interval.start  # it ran

    # each cull is logged with user, server, kind and idle time
    log = fac.log_path.read_text(errors="replace")
    for name in ("(default)", "nb"):
        assert f"Culling user idler server {name} kind cpu idle 00:00:0" in log, fac.log_tail()
    assert "past the cpu timeout of 3 s" in log
