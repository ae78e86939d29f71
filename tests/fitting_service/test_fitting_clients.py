"""The faces of the fitting service: ``FitClient`` inside a user's server (no
configuration) and, from a plain shell, ``afhub login`` then ``afhub fit`` with nothing but
the address the facility printed, on sbottom patches."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests

from tests.facility import run_in_kernel
from tests.fitting_service.conftest import REFERENCE_CLS_OBS, REFERENCE_PATCH, sbottom_patchset

pytestmark = [pytest.mark.facility, pytest.mark.slow]

PATCHES = [REFERENCE_PATCH, "patch.sbottom_1000_131_1.json", "patch.sbottom_1000_205_60.json"]
#: names of those patches in a patchset
NAMES = [p.removeprefix("patch.").removesuffix(".json") for p in PATCHES]


@pytest.fixture(scope="module")
def carol(facility):
    name = "fit-carol"
    password = facility.add_user(name)
    session = facility.login(name, password)
    session.password = password
    return name, session


def test_fitclient_in_a_users_server_gets_a_cls_table(facility, carol, sbottom):
    name, session = carol
    patchset_file = sbottom["dir"].parent / "patchset-3.json"
    patchset_file.write_text(json.dumps(sbottom_patchset(sbottom, PATCHES)))
    session.start_server()
    try:
        token = session.new_token("kernel")
        code = f"""
import json
from pathlib import Path
from afhub.client import FitClient, format_table
region = Path({str(sbottom["dir"])!r})
workspace = json.loads((region / "BkgOnly.json").read_text())
patchset = json.loads(Path({str(patchset_file)!r}).read_text())
fits = FitClient()
job = fits.submit(workspace, patchset=patchset)
final = fits.wait(job, timeout=240)
print(json.dumps({{"state": final["state"], "table": fits.table(job)}}))
"""
        out = run_in_kernel(facility.url, name, token, code, timeout=300)
    finally:
        session.stop_server()
    report = json.loads(out.strip().splitlines()[-1])
    assert report["state"] == "done"
    rows = {row["patch"]: row for row in report["table"]}
    assert set(rows) == set(NAMES)
    for row in rows.values():
        assert row["status"] == "converged", row
        assert 0 < row["cls_obs"] <= 1
        assert len(row["cls_exp"]) == 5
    reference = rows[NAMES[0]]
    # engine auto: several patches run batched where supported (1e-5 of pyhf, its gate)
    assert reference["engine"] in ("batched", "pyhf")
    assert reference["cls_obs"] == pytest.approx(REFERENCE_CLS_OBS, abs=1e-5)


def test_afhub_login_then_fit_from_a_shell(facility, carol, sbottom, tmp_path):
    name, session = carol
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AFHUB_", "JUPYTERHUB_"))}
    env["AFHUB_CREDENTIALS"] = str(tmp_path / "config" / "credentials.json")
    region = sbottom["dir"]

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "afhub", *args],
            env=env,
            cwd=tmp_path,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
        )

    # what `afhub up` printed is all a person has: the login address
    login_address = f"{facility.url}hub/login"
    refused = run("login", login_address, "--user", name, "--password-stdin", stdin="wrong\n")
    assert refused.returncode == 2
    assert "refused user 'fit-carol'" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    missing = run("fit", "status", "x", "--url", facility.url)
    assert missing.returncode == 2
    assert f"no token for {facility.url}: run `afhub login {facility.url}`" in missing.stderr
    done = run("login", login_address, "--user", name, "--password-stdin", stdin=session.password)
    assert done.returncode == 0, done.stderr
    assert f"logged in to {facility.url} as {name}" in done.stdout
    kept = tmp_path / "config" / "credentials.json"
    assert kept.stat().st_mode & 0o777 == 0o600
    token = run("token").stdout.strip()
    me = requests.get(
        f"{facility.api_url}user", headers={"Authorization": f"token {token}"}, timeout=30
    )
    assert me.json()["name"] == name  # the person's own token, for the REST API too
    assert not me.json()["admin"]
    # browser login (CILogon): the token pasted from /hub/token is checked with the hub
    forged = run("login", facility.url, "--browser", "--password-stdin", stdin="forged\n")
    assert forged.returncode == 2
    assert "does not accept this token" in forged.stderr
    pasted = run("login", facility.url, "--browser", "--password-stdin", stdin=token)
    assert pasted.returncode == 0, pasted.stderr
    assert f"{facility.url}hub/token" in pasted.stderr
    assert f"as {name}" in pasted.stdout

    def afhub(*args: str) -> subprocess.CompletedProcess:
        # the URL the facility exports to servers is as good as any other address of it
        return run("fit", *args, "--url", f"{facility.url}services/fitting/")

    patchset_file = region.parent / "patchset-2.json"
    patchset_file.write_text(json.dumps(sbottom_patchset(sbottom, PATCHES[:2])))
    done = afhub("submit", str(region / "BkgOnly.json"), "--patchset", str(patchset_file), "--wait")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.splitlines()[0].strip()
    assert f"{job_id}: done" in done.stdout
    for patch in NAMES[:2]:
        assert patch in done.stdout
    assert "cls_obs" in done.stdout
    assert "converged" in done.stdout

    status = run("fit", "status", job_id)  # no --url: the facility of the login
    assert status.returncode == 0, status.stderr
    assert "done (2/2 patches)" in status.stdout
    table = afhub("results", job_id)
    assert table.returncode == 0
    assert NAMES[0] in table.stdout
    single = afhub(
        "submit",
        str(region / "BkgOnly.json"),
        *("--patch", str(region / PATCHES[1]), "--settings", '{"engine": "pyhf"}'),
    )
    assert single.returncode == 0
    assert single.stdout.strip()
    cancelled = afhub("cancel", single.stdout.strip())
    assert cancelled.returncode == 0
    assert "cancelled" in cancelled.stdout
    full = afhub("results", job_id, "--json")
    assert json.loads(full.stdout)[0]["provenance"]["workspace_sha256"]

    missing = afhub("status", "no-such-job")
    assert missing.returncode == 2
    assert "no fit job" in missing.stderr
    bad = afhub("submit", str(region.parent / "README.md"))
    assert bad.returncode == 2
    assert "not valid JSON" in bad.stderr
