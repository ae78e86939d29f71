"""The fitting service attacked through the real facility (hub tokens, the proxy): request
bombs are refused fast with bounded memory, bad-typed patches and parameters are 4xx with a
message, and the result cache does not tell one user what another ran."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from tests.fitting_service.conftest import (
    assert_clean_message,
    call,
    results,
    submit,
    user_token,
    wait_job,
)
from tests.support.workspaces import tiny_workspace

pytestmark = [pytest.mark.facility, pytest.mark.slow]


@pytest.fixture(scope="module")
def alice(facility):
    return user_token(facility, "sec-fit-alice")


@pytest.fixture(scope="module")
def bob(facility):
    return user_token(facility, "sec-fit-bob")


def fitting_service(facility) -> psutil.Process:
    for proc in facility._tree():
        try:
            if "afhub.services.fitting" in " ".join(proc.cmdline()):
                return proc
        except psutil.NoSuchProcess:
            continue
    raise AssertionError("no fitting service process in the facility")


def unique_workspace() -> dict:
    """A tiny workspace no other test sends (so that no cached result exists for it)."""
    return tiny_workspace(signal=5.0 + uuid.uuid4().int % 1000 / 1000)


def amplification_body(copies: int = 21) -> dict:
    """The issue's 1.5 kB request: each ``copy`` doubles the workspace (21 of them cost the
    service 6.8 s and 440 MiB before the fix)."""
    ops = [{"op": "copy", "from": "/channels", "path": "/channels/-"} for _ in range(copies)]
    return {"workspace": unique_workspace(), "patches": [{"name": "boom", "patch": ops}]}


def test_the_doubling_request_is_refused_fast_with_bounded_memory(facility, alice, bob):
    call(facility, alice, "GET", "jobs")  # the service is up
    service = fitting_service(facility)
    rss_before = service.memory_info().rss

    started = time.monotonic()
    response = call(facility, alice, "POST", "jobs", json=amplification_body())
    elapsed = time.monotonic() - started
    assert response.status_code == 413, response.text
    message = assert_clean_message(response, "too large", "copy operations", "100000")
    assert "boom" in message
    assert elapsed < 1.0, elapsed

    # eight at once (the denial of service): all refused, and another user's fit
    # is accepted and runs meanwhile
    with ThreadPoolExecutor(8) as pool:
        bombs = list(
            pool.map(
                lambda _: call(facility, alice, "POST", "jobs", json=amplification_body(23)),
                range(8),
            )
        )
        job = submit(facility, bob, {"workspace": unique_workspace()})
    assert [r.status_code for r in bombs] == [413] * 8
    assert wait_job(facility, bob, job["id"])["state"] == "done"
    growth = service.memory_info().rss - rss_before
    assert growth < 64 * 1024 * 1024, f"the service grew by {growth / 2**20:.0f} MiB"
    assert call(facility, alice, "GET", "jobs").json()["jobs"] == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("/channels/0/name", {"an": "object"}),
        ("/channels/0/name", ["a", "list"]),
        ("/observations/0/name", {"x": 1}),
        ("/measurements/0/config/poi", ["mu"]),
        ("/channels/0/samples/0/modifiers/0/name", {"x": 1}),
    ],
)
def test_a_patch_with_a_wrong_type_is_a_400_with_a_message(facility, alice, path, value):
    patch = {"name": "bad", "patch": [{"op": "replace", "path": path, "value": value}]}
    response = call(
        facility, alice, "POST", "jobs", json={"workspace": tiny_workspace(), "patches": [patch]}
    )
    assert response.status_code == 400, response.text
    assert_clean_message(response, "patched with 'bad'")


@pytest.mark.parametrize(
    ("method", "path", "params", "json_body"),
    [
        ("POST", "jobs", {"group": "../../etc"}, {"workspace": tiny_workspace()}),
        ("POST", "jobs", {"group": "x" * 5000}, {"workspace": tiny_workspace()}),
        ("POST", "jobs", {"group": "users/\u0000"}, {"workspace": tiny_workspace()}),
        ("POST", "jobs", {"wall_seconds": "1e999"}, {"workspace": tiny_workspace()}),
        ("POST", "jobs", {"wall_seconds": "-0"}, {"workspace": tiny_workspace()}),
        ("POST", "jobs", None, {"workspace": tiny_workspace(), "patches": {"a": 1}}),
        ("POST", "jobs", None, {"workspace": tiny_workspace(), "patch_names": [{"a": 1}]}),
        ("POST", "jobs", None, {"workspace": tiny_workspace(), "settings": []}),
        ("POST", "jobs", None, {"workspace": tiny_workspace(), "measurement": {"a": 1}}),
        ("POST", "jobs", None, {"workspace": tiny_workspace(), "operation": ["fit"]}),
        ("POST", "jobs", None, [1, 2]),
        ("GET", "jobs", {"limit": "9" * 40}, None),
        ("GET", "jobs/%00", None, None),
        ("GET", "jobs/" + "a" * 3000 + "/results", None, None),
        ("DELETE", "jobs/..%2F..%2Fhub", None, None),
    ],
)
def test_bad_typed_input_is_a_4xx_with_a_message(facility, alice, method, path, params, json_body):
    response = call(facility, alice, method, path, params=params, json=json_body)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert_clean_message(response)


def test_the_cache_does_not_tell_one_user_what_another_ran(facility, alice, bob):
    request = {"workspace": unique_workspace(), "settings": {"engine": "pyhf"}}
    first = submit(facility, alice, request)
    assert wait_job(facility, alice, first["id"])["state"] == "done"
    (computed,) = results(facility, alice, first["id"])
    assert computed["cached"] is False

    # bob sends the same request: served fast (the speed is kept), but nothing says it was
    # served from alice's computation: not the flag, not her timings
    theirs = submit(facility, bob, request)
    assert wait_job(facility, bob, theirs["id"])["state"] == "done"
    (served,) = results(facility, bob, theirs["id"])
    assert served["values"] == computed["values"]
    assert served["cached"] is False
    assert served["timings"] != computed["timings"]
    assert set(served["timings"]) == set(computed["timings"])
    assert served["timings"]["total"] < 5.0

    # alice's own repeat may say so: it is her own earlier request
    again = submit(facility, alice, request)
    assert wait_job(facility, alice, again["id"])["state"] == "done"
    (mine,) = results(facility, alice, again["id"])
    assert mine["cached"] is True
    assert mine["timings"] == computed["timings"]
