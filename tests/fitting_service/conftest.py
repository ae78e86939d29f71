"""Helpers of the fitting-service tests: calls through the facility's proxy with real hub
tokens, the sbottom likelihoods, a tiny workspace."""

from __future__ import annotations

import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import requests

from tests.facility import PROJECT_ROOT, Facility

SBOTTOM_ARCHIVE = "data/likelihoods/sbottom_ATLAS-SUSY-2018-31.tar.gz"
REFERENCE_PATCH = "patch.sbottom_1300_205_60.json"
REFERENCE_CLS_OBS = 0.24443628
FINAL = ("done", "failed", "cancelled")


def fit_url(fac: Facility, path: str = "") -> str:
    return urljoin(fac.url, "services/fitting/api/" + path)


def call(fac: Facility, token: str | None, method: str, path: str, **kwargs: Any):
    """A call to the fitting service through the proxy (retried while it starts)."""
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"token {token}"
    kwargs.setdefault("timeout", 60)
    deadline = time.monotonic() + 90
    while True:
        try:
            response = requests.request(method, fit_url(fac, path), headers=headers, **kwargs)
        except requests.ConnectionError:
            response = None
        # 503: the proxy has the route but the service (re)starts
        if response is not None and response.status_code not in (502, 503):
            return response
        if time.monotonic() > deadline:
            raise AssertionError("the fitting service never answered")
        time.sleep(0.25)


def submit(fac: Facility, token: str, body: dict, **params: Any) -> dict:
    response = call(fac, token, "POST", "jobs", json=body, params=params or None)
    assert response.status_code == 201, response.text
    return response.json()


def wait_job(fac: Facility, token: str, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = call(fac, token, "GET", f"jobs/{job_id}").json()
        if job["state"] in FINAL:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job['state']} after {timeout} s")
        time.sleep(0.3)


def results(fac: Facility, token: str, job_id: str) -> list[dict]:
    response = call(fac, token, "GET", f"jobs/{job_id}/results")
    assert response.status_code == 200, response.text
    return response.json()["results"]


def user_token(fac: Facility, name: str) -> str:
    return fac.login(name, fac.add_user(name)).new_token("fitting tests")


def shared_dir() -> Path:
    env = os.environ.get("AFHUB_SHARED")
    return Path(env) if env else PROJECT_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def sbottom(tmp_path_factory) -> dict:
    """RegionA of the sbottom likelihoods: ``dir``, ``bkg`` (the workspace) and
    ``patches`` (file name -> JSON Patch)."""
    archive = shared_dir() / SBOTTOM_ARCHIVE
    if not archive.is_file():
        pytest.skip(f"sbottom archive not found at {archive}")
    target = tmp_path_factory.mktemp("sbottom-service")
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target, filter="data")
    region = target / "RegionA"
    patches = {
        p.name: json.loads(p.read_text()) for p in sorted(region.glob("patch.sbottom_*.json"))
    }
    return {
        "dir": region,
        "bkg": json.loads((region / "BkgOnly.json").read_text()),
        "patches": patches,
    }


def assert_clean_message(response: requests.Response, *words: str) -> str:
    """A JSON error with a message naming the problem, without paths or tracebacks."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    body = response.json()
    message = body["error"]
    assert isinstance(message, str)
    assert message
    assert "Traceback" not in response.text
    for local in (str(PROJECT_ROOT), "/tmp/", "/work/", "/usr/", str(Path.home()) + "/"):
        assert local not in response.text, f"server path in {message!r}"
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    return message


def sbottom_patchset(sbottom: dict, names: list[str]) -> dict:
    """A pyhf patchset (schema 1.0.0) of some sbottom patch files, made for RegionA."""
    import pyhf

    patches = []
    for name in names:
        short = name.removeprefix("patch.").removesuffix(".json")
        values = [float(v) for v in short.split("_")[1:]]
        patches.append(
            {"metadata": {"name": short, "values": values}, "patch": sbottom["patches"][name]}
        )
    return {
        "version": "1.0.0",
        "metadata": {
            "description": "sbottom RegionA signal patches (ATLAS-SUSY-2018-31)",
            "digests": {"sha256": pyhf.utils.digest(sbottom["bkg"], algorithm="sha256")},
            "labels": ["m_sbottom", "m_neutralino2", "m_neutralino1"],
            "references": {"hepdata": "ins1748602"},
        },
        "patches": patches,
    }
