"""The faces of the fitting service: ``FitClient`` inside a user's server (no
configuration) and ``afhub fit`` on the command line, on sbottom patches."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.facility import PROJECT_ROOT, run_in_kernel
from tests.fitting_service.conftest import REFERENCE_CLS_OBS, REFERENCE_PATCH, sbottom_patchset

pytestmark = [pytest.mark.facility, pytest.mark.slow]

PATCHES = [REFERENCE_PATCH, "patch.sbottom_1000_131_1.json", "patch.sbottom_1000_205_60.json"]
#: names of those patches in a patchset
NAMES = [p.removeprefix("patch.").removesuffix(".json") for p in PATCHES]


@pytest.fixture(scope="module")
def carol(facility):
    name = "fit-carol"
    session = facility.login(name, facility.add_user(name))
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


def test_afhub_fit_submit_wait_status_results(facility, carol, sbottom):
    _name, session = carol
    token = session.new_token("cli")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AFHUB_", "JUPYTERHUB_"))}
    env["JUPYTERHUB_API_TOKEN"] = token
    region = sbottom["dir"]

    def afhub(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "afhub", "fit", *args, "--url", facility.url],
            env=env,
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

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

    status = afhub("status", job_id)
    assert status.returncode == 0
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
