"""The fitting service in the session's real facility: real hub tokens through the proxy,
bad input, ownership, wall-clock kills, correctness against pyhf, the cache."""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
import pyhf
import pytest

from tests.facility import PROJECT_ROOT
from tests.fitting_service.conftest import (
    REFERENCE_CLS_OBS,
    REFERENCE_PATCH,
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
    return user_token(facility, "fit-alice")


@pytest.fixture(scope="module")
def bob(facility):
    return user_token(facility, "fit-bob")


def test_submit_status_results_listing_and_ownership(facility, alice, bob):
    job = submit(facility, alice, {"workspace": tiny_workspace(), "settings": {"engine": "pyhf"}})
    assert job["state"] in ("queued", "running")
    assert job["owner"] == "fit-alice"
    assert job["group"] == "users"  # charged to the default group
    done = wait_job(facility, alice, job["id"])
    assert done["state"] == "done"
    assert done["progress"] == {"done": 1, "total": 1}
    (result,) = results(facility, alice, job["id"])
    assert result["status"] == "converged"
    assert result["engine"] == "pyhf"
    assert 0 < result["values"]["cls_obs"][0] < 1
    assert len(result["values"]["cls_exp"][0]) == 5
    provenance = result["provenance"]
    assert provenance["pyhf"] == pyhf.__version__
    assert provenance["backend"] == "numpy"
    assert provenance["workspace_sha256"] == done["workspace_sha256"]
    assert provenance["settings"]["engine"] == "pyhf"
    assert result["timings"]["total"] > 0
    assert result["diagnostics"]["n_fits"] >= 1

    listed = call(facility, alice, "GET", "jobs").json()["jobs"]
    assert job["id"] in [j["id"] for j in listed]
    assert all(j["owner"] == "fit-alice" for j in listed)
    assert job["id"] not in [j["id"] for j in call(facility, bob, "GET", "jobs").json()["jobs"]]

    # bob cannot see, read or cancel alice's job: 404 as for a job that does not exist
    for method, path in [
        ("GET", f"jobs/{job['id']}"),
        ("GET", f"jobs/{job['id']}/results"),
        ("DELETE", f"jobs/{job['id']}"),
    ]:
        response = call(facility, bob, method, path)
        assert response.status_code == 404, response.text
        assert_clean_message(response, "no fit job")
    assert call(facility, bob, "GET", "jobs/doesnotexist").status_code == 404


def test_tokens_are_required_and_checked(facility):
    missing = call(facility, None, "GET", "jobs")
    assert missing.status_code == 401
    assert_clean_message(missing, "not authenticated")
    forged = call(facility, "0123456789abcdef-forged", "POST", "jobs", json={})
    assert forged.status_code in (401, 403)
    assert_clean_message(forged)
    assert call(facility, None, "GET", "openapi.yaml").status_code == 200


def _bounds(ws, bounds):
    ws["measurements"][0]["config"]["parameters"] = [{"name": "mu", "bounds": bounds}]
    return ws


def _bad_cases():
    ws = tiny_workspace()
    body = json.dumps({"workspace": ws})

    def changed(fn):
        w = copy.deepcopy(ws)
        fn(w)
        return json.dumps({"workspace": w}).encode()

    return {
        "nan": (b'{"workspace": {"a": NaN}}', ["NaN"]),
        "infinity": (b'{"workspace": {"a": -Infinity}}', ["Infinity"]),
        "overflow": (b'{"workspace": {"a": 1e999}}', ["infinity"]),
        "deep": (b'{"workspace": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", ["nested"]),
        "utf8": (b'{"workspace": "\xff\xfe"}', ["UTF-8"]),
        "not json": (body[:-3].encode(), ["not valid JSON"]),
        "schema": (changed(lambda w: w.pop("channels")), ["schema", "channels"]),
        "version": (changed(lambda w: w.update(version="2.0.0")), ["version", "2.0.0"]),
        "bounds shape": (changed(lambda w: _bounds(w, [[0, 10], [0, 1]])), ["bounds", "2 entries"]),
        "bounds reversed": (changed(lambda w: _bounds(w, [[10, 0]])), ["reversed"]),
        "observations": (
            changed(lambda w: w["observations"][0].update(data=[1.0, 2.0])),
            ["observations", "2 entries"],
        ),
        "unknown poi": (
            changed(lambda w: w["measurements"][0]["config"].update(poi="nope")),
            ["POI", "nope"],
        ),
        "patch": (
            json.dumps(
                {
                    "workspace": ws,
                    "patches": [
                        {
                            "name": "broken",
                            "patch": [{"op": "remove", "path": "/channels/3"}],
                        }
                    ],
                }
            ).encode(),
            ["broken", "does not apply"],
        ),
        "setting": (
            json.dumps({"workspace": ws, "settings": {"backend": "jax"}}).encode(),
            ["backend", "jax"],
        ),
        "operation": (json.dumps({"workspace": ws, "operation": "rm"}).encode(), ["operation"]),
    }


def test_bad_input_is_refused_with_a_message_and_leaves_nothing(facility, alice):
    before = len(call(facility, alice, "GET", "jobs").json()["jobs"])
    for name, (body, words) in _bad_cases().items():
        response = call(
            facility,
            alice,
            "POST",
            "jobs",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 400, (name, response.status_code, response.text[:300])
        assert_clean_message(response, *words)
    bad_wall = call(facility, alice, "POST", "jobs", json={}, params={"wall_seconds": "nan"})
    assert_clean_message(bad_wall, "wall_seconds")
    assert len(call(facility, alice, "GET", "jobs").json()["jobs"]) == before
    # still serving
    job = submit(facility, alice, {"workspace": tiny_workspace(obs=53.0)})
    assert wait_job(facility, alice, job["id"])["state"] == "done"


def test_a_fit_past_its_wall_clock_limit_is_killed_and_reported(facility, alice, sbottom):
    body = {
        "workspace": sbottom["bkg"],
        "patches": [{"name": REFERENCE_PATCH, "patch": sbottom["patches"][REFERENCE_PATCH]}],
        "operation": "upper_limit",
        "settings": {"engine": "pyhf", "scan": [0.0, 5.0, 41]},
    }
    started = time.monotonic()
    job = submit(facility, alice, body, wall_seconds=2)
    done = wait_job(facility, alice, job["id"], timeout=60)
    assert time.monotonic() - started < 40
    assert done["state"] == "failed"
    assert "wall-clock limit of 2 s" in done["error"]
    (result,) = results(facility, alice, job["id"])
    assert result["status"] == "failed"
    assert result["values"] == {}
    assert "wall-clock limit" in result["diagnostics"]["reason"]
    over = call(facility, alice, "POST", "jobs", json=body, params={"wall_seconds": 1e9})
    assert_clean_message(over, "wall_seconds")


def _direct_pyhf(sbottom, scan) -> subprocess.Popen:
    """pyhf itself in a subprocess with the workers' numerical environment (one BLAS
    thread); it runs while the service computes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    env["MKL_NUM_THREADS"] = "1"
    args = [str(sbottom["dir"] / "BkgOnly.json"), str(sbottom["dir"] / REFERENCE_PATCH)]
    return subprocess.Popen(
        [sys.executable, "-m", "tests.fitting_service.direct_pyhf", *args, *map(str, scan)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_results_equal_pyhf_and_identical_requests_come_from_the_cache(facility, alice, sbottom):
    patch = sbottom["patches"][REFERENCE_PATCH]
    one = [{"name": REFERENCE_PATCH, "patch": patch}]
    bkg = sbottom["bkg"]
    scan = [0.5, 1.5, 3]
    jobs = {
        "hypotest": submit(
            facility,
            alice,
            {"workspace": bkg, "patches": one, "settings": {"engine": "pyhf"}},
        ),
        "upper_limit": submit(
            facility,
            alice,
            {
                "workspace": bkg,
                "patches": one,
                "operation": "upper_limit",
                "settings": {"engine": "pyhf", "scan": scan},
            },
        ),
        "fit": submit(
            facility,
            alice,
            {"workspace": bkg, "patches": one, "operation": "fit", "settings": {"engine": "pyhf"}},
        ),
    }
    direct = _direct_pyhf(sbottom, scan)
    out, _ = direct.communicate(timeout=600)  # the shared machine may be loaded
    ref = json.loads(out)

    rel = {"rel": 1e-6}
    got = {
        op: results(facility, alice, wait_job(facility, alice, j["id"])["id"])
        for op, j in jobs.items()
    }
    h = got["hypotest"][0]
    assert h["status"] == "converged", h["diagnostics"]
    assert h["values"]["cls_obs"][0] == pytest.approx(ref["cls_obs"], **rel)
    assert h["values"]["cls_obs"][0] == pytest.approx(REFERENCE_CLS_OBS, rel=1e-5)
    assert h["values"]["cls_exp"][0] == pytest.approx(ref["cls_exp"], **rel)
    u = got["upper_limit"][0]
    assert u["status"] == "converged", u["diagnostics"]
    assert u["values"]["obs_limit"] == pytest.approx(ref["obs_limit"], **rel)
    assert u["values"]["exp_limits"] == pytest.approx(ref["exp_limits"], **rel)
    f = got["fit"][0]
    assert f["status"] == "converged", f["diagnostics"]
    assert f["values"]["twice_nll"] == pytest.approx(ref["twice_nll"], **rel)
    ours = np.concatenate([f["values"]["parameters"][name] for name in ref["par_order"]])
    np.testing.assert_allclose(ours, np.asarray(ref["best"]), rtol=1e-6, atol=1e-9)
    assert all(math.isfinite(x) for x in f["values"]["uncertainties"]["mu_SIG"])

    # the same request again: served from the stored result, not recomputed
    started = time.monotonic()
    again = submit(
        facility, alice, {"workspace": bkg, "patches": one, "settings": {"engine": "pyhf"}}
    )
    assert wait_job(facility, alice, again["id"])["state"] == "done"
    assert time.monotonic() - started < 2.5
    (cached,) = results(facility, alice, again["id"])
    assert cached["cached"] is True
    assert cached["values"] == h["values"]
    assert cached["timings"] == h["timings"]  # the stored computation, not a new one


def test_engines_batched_with_per_patch_fallback_to_pyhf(facility, alice):
    patches = [
        {
            "name": f"signal_{s}",
            "patch": [{"op": "replace", "path": "/channels/0/samples/0/data", "value": [s]}],
        }
        for s in (3.0, 8.0)
    ]
    base = {"workspace": tiny_workspace(obs=51.0), "patches": patches}
    reference = submit(facility, alice, {**base, "settings": {"engine": "pyhf"}})
    batched = submit(facility, alice, {**base, "settings": {"engine": "batched"}})
    fallback = submit(
        facility,
        alice,
        {**base, "settings": {"engine": "batched", "histosys_interpcode": "code0"}},
    )
    ref = results(facility, alice, wait_job(facility, alice, reference["id"])["id"])
    got = results(facility, alice, wait_job(facility, alice, batched["id"])["id"])
    assert [r["engine"] for r in got] == ["batched", "batched"]
    assert [r["patch"] for r in got] == ["signal_3.0", "signal_8.0"]
    for a, b in zip(got, ref, strict=True):
        assert a["status"] == b["status"] == "converged"
        assert a["provenance"]["engine"] == "batched"
        assert a["provenance"]["torch"]
        # the batched engine's own gate against pyhf: 1e-5
        np.testing.assert_allclose(a["values"]["cls_obs"], b["values"]["cls_obs"], atol=1e-5)
        np.testing.assert_allclose(a["values"]["cls_exp"], b["values"]["cls_exp"], atol=1e-5)
    assert wait_job(facility, alice, fallback["id"])["state"] == "done"
    for r in results(facility, alice, fallback["id"]):
        assert r["engine"] == "pyhf"
        assert r["status"] == "converged"
        assert "histosys" in r["diagnostics"]["batched_fallback_reason"]
