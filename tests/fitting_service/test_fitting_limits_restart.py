"""The fitting service under pressure, in a private facility with small limits: body size
and caps, 50 concurrent large submissions, charging, and a crash of the whole facility."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from afhub.stores.facade import Stores
from tests.facility import Facility
from tests.fitting_service.conftest import (
    assert_clean_message,
    call,
    fit_url,
    results,
    submit,
    user_token,
    wait_job,
)
from tests.support.workspaces import tiny_workspace

pytestmark = [pytest.mark.facility, pytest.mark.slow]

MAX_BODY = 2 * 1024 * 1024
CONFIG = {
    "FittingService": {
        "workers": 1,
        "max_jobs_per_user": 3,
        "max_jobs_per_group": 20,
        "max_body_bytes": MAX_BODY,
        "max_bins": 100,
        "max_parameters": 200,
    }
}


@pytest.fixture(scope="module")
def fac(tmp_path_factory):
    fac = Facility(tmp_path_factory.mktemp("fitting-limits"), config=CONFIG)
    fac.start()
    yield fac
    fac.stop()
    fac.cleanup_orphans()


def test_body_size_and_caps(fac):
    token = user_token(fac, "caps")
    big = json.dumps({"workspace": tiny_workspace(), "patch_names": ["x" * MAX_BODY]})
    response = call(fac, token, "POST", "jobs", data=big)
    assert response.status_code == 413
    assert_clean_message(response, "over the limit", str(MAX_BODY))

    wide = tiny_workspace()
    n = 101
    samples = wide["channels"][0]["samples"]
    samples[0]["data"], samples[1]["data"] = [1.0] * n, [50.0] * n
    samples[1]["modifiers"][0]["data"] = [7.0] * n
    wide["observations"][0]["data"] = [50.0] * n
    assert_clean_message(call(fac, token, "POST", "jobs", json={"workspace": wide}), "100 bins")

    many = tiny_workspace()
    many["channels"][0]["samples"][1]["modifiers"] += [
        {"name": f"syst{i}", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}} for i in range(201)
    ]
    response = call(fac, token, "POST", "jobs", json={"workspace": many})
    assert_clean_message(response, "parameters", "cap of 200")
    assert call(fac, token, "GET", "jobs").json()["jobs"] == []


def test_fifty_concurrent_large_submissions_are_queued_or_refused(fac, sbottom):
    flood, other = user_token(fac, "flood"), user_token(fac, "other")
    body = json.dumps(
        {
            "workspace": sbottom["bkg"],
            "patches": [
                {"name": name, "patch": patch}
                for name, patch in list(sbottom["patches"].items())[:10]
            ],
            "settings": {"engine": "pyhf"},
        }
    ).encode()
    assert len(body) > 400_000  # a large submission (under this facility's 2 MiB limit)
    call(fac, other, "GET", "jobs")  # the service is up

    latencies: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            started = time.monotonic()
            response = requests.get(
                fit_url(fac, "jobs"), headers={"Authorization": f"token {other}"}, timeout=30
            )
            assert response.status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)

    def post(_: int) -> requests.Response:
        return requests.post(
            fit_url(fac, "jobs"),
            data=body,
            headers={"Authorization": f"token {flood}", "Content-Type": "application/json"},
            timeout=120,
        )

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(50) as pool:
            responses = list(pool.map(post, range(50)))
    finally:
        stop.set()
        watcher.join()
    codes = [r.status_code for r in responses]
    assert set(codes) <= {201, 429}, codes
    assert 1 <= codes.count(201) <= 3
    assert codes.count(429) >= 47
    refused = next(r for r in responses if r.status_code == 429)
    assert_clean_message(refused, "limit per user is 3")
    assert len(latencies) >= 3, latencies
    assert max(latencies) < 3.0, latencies

    # cancelling frees the slots, and the running fit is killed
    jobs = call(fac, flood, "GET", "jobs").json()["jobs"]
    assert len(jobs) == codes.count(201)
    for job in jobs:
        cancelled = call(fac, flood, "DELETE", f"jobs/{job['id']}")
        assert cancelled.status_code == 200
        assert cancelled.json()["state"] == "cancelled"
    for job in jobs:
        assert wait_job(fac, flood, job["id"])["state"] == "cancelled"
    assert call(fac, other, "GET", "jobs").status_code == 200


def test_a_group_without_budget_gets_its_fits_refused(fac):
    token = user_token(fac, "broke")
    stores = Stores.open(f"sqlite:///{fac.home / 'afhub.sqlite'}", migrate=False)
    try:
        stores.groups.create("tight")
        stores.groups.add_member("tight", "broke")
        stores.quotas.set("tight", {"cpu_core_hours": 0})
    finally:
        stores.close()
    job = submit(fac, token, {"workspace": tiny_workspace(obs=61.0)}, group="tight")
    assert job["group"] == "tight"
    done = wait_job(fac, token, job["id"])
    assert done["state"] == "failed"
    assert done["error"].startswith("not admitted")
    assert "cpu_core_hours" in done["error"] or "budget" in done["error"], done["error"]
    assert results(fac, token, job["id"]) == []
    other = call(
        fac, token, "POST", "jobs", json={"workspace": tiny_workspace()}, params={"group": "cms"}
    )
    assert other.status_code in (403, 404)
    assert_clean_message(other)


def _fit_charges(fac: Facility, user: str):
    stores = Stores.open(f"sqlite:///{fac.home / 'afhub.sqlite'}", migrate=False)
    try:
        open_ = [i for i in stores.ledger.open_intervals(kind="fit") if i.user == user]
        report = stores.ledger.usage("users", _epoch(), _now())
        closed = [i for i in report.intervals if i.user == user and i.kind == "fit"]
        return open_, closed
    finally:
        stores.close()


def _epoch():
    from datetime import UTC, datetime

    return datetime(2000, 1, 1, tzinfo=UTC)


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_a_crash_loses_no_job_and_fits_are_charged(fac):
    token = user_token(fac, "survivor")
    body = {
        "workspace": tiny_workspace(),
        "operation": "upper_limit",
        "settings": {"engine": "pyhf", "scan": [0.0, 5.0, 61]},
    }
    jobs = []
    for obs in (52.0, 53.0, 54.0):
        body["workspace"] = tiny_workspace(obs=obs)
        jobs.append(submit(fac, token, body)["id"])
    deadline = time.monotonic() + 60
    while call(fac, token, "GET", f"jobs/{jobs[0]}").json()["state"] != "running":
        assert time.monotonic() < deadline, "no job started"
        time.sleep(0.1)
    states = {j: call(fac, token, "GET", f"jobs/{j}").json()["state"] for j in jobs}
    assert any(s in ("queued", "running") for s in states.values()), states

    # a crash of everything: the hub, the proxy, the services and the fit workers
    fac.kill()
    fac.cleanup_orphans()
    fac.start()

    for job_id in jobs:
        job = wait_job(fac, token, job_id, timeout=120)
        assert job["state"] == "done", job
        (result,) = results(fac, token, job_id)
        assert result["status"] == "converged", result["diagnostics"]
        assert 0 < result["values"]["obs_limit"] < 5
    resumed = [call(fac, token, "GET", f"jobs/{j}").json() for j in jobs]
    assert any(j["attempts"] >= 2 for j in resumed), resumed

    open_, closed = _fit_charges(fac, "survivor")
    assert open_ == []
    assert closed
    assert all(i.group == "users" and i.cpu_cores == 1 for i in closed)
