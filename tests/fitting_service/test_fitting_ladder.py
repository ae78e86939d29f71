"""The fitting service's fallback ladder, in the session's real facility: a patch the batched
engine does not certify is fitted with pyhf (SciPy, then MINUIT) before anything is stored;
``not_converged`` is stored only with every rung's attempt."""

from __future__ import annotations

import json
import tarfile

import pytest

from afhub.fitting.pyhf_engine import PyhfEngine
from afhub.fitting.types import FitTask
from tests.fitting.hard_cases import one_sided_zero_yield, pinned_at_bound, zero_yield_bins
from tests.fitting_service.conftest import results, shared_dir, submit, user_token, wait_job

pytestmark = [pytest.mark.facility, pytest.mark.slow]

STAUS_ARCHIVE = "data/likelihoods/staus_ATLAS-SUSY-2018-04_lowMass_combined.tar.gz"
#: the batched engine returned not_converged here (PROVENANCE.md, December 2026); pyhf's
#: default converges
STAUS_PATCH = "patch.DS_100_1_Staus.json"


@pytest.fixture(scope="module")
def dora(facility):
    return user_token(facility, "fit-dora")


@pytest.fixture(scope="module")
def staus(tmp_path_factory) -> tuple[dict, list]:
    archive = shared_dir() / STAUS_ARCHIVE
    if not archive.is_file():
        pytest.skip(f"staus archive not found at {archive}")
    target = tmp_path_factory.mktemp("staus-service")
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target, filter="data")
    region = target / "Region-combined"
    bkg = json.loads((region / "BkgOnly.json").read_text())
    return bkg, json.loads((region / STAUS_PATCH).read_text())


def test_a_patch_the_batched_engine_gives_up_on_is_stored_certified(facility, dora, staus):
    bkg, patch = staus
    job = submit(
        facility,
        dora,
        {
            "workspace": bkg,
            "patches": [{"name": "DS_100_1", "patch": patch}],
            "settings": {"engine": "batched"},
        },
    )
    assert wait_job(facility, dora, job["id"], timeout=900)["state"] == "done"
    (result,) = results(facility, dora, job["id"])
    # pyhf's default converges on this patch: the service must not store not_converged
    assert result["status"] == "converged", result["diagnostics"]
    assert result["certificate"]["ok"] is True
    assert result["certificate"]["worst"]["kkt"] <= result["certificate"]["thresholds"]["grad_tol"]
    if result["engine"] == "pyhf":
        ladder = result["provenance"]["ladder"]
        assert ladder[0]["rung"] == "batched"
        assert ladder[0]["status"] == "not_converged"
        assert ladder[-1]["status"] == "converged"
        assert ladder[-1]["certificate"]["ok"]
    # the reference: pyhf itself, in this process
    ref = PyhfEngine(certify=False).run_one(
        FitTask(workspace=bkg, patches=({"name": "p", "patch": patch},)), 0
    )
    assert result["values"]["cls_obs"][0] == pytest.approx(ref.values["cls_obs"][0], abs=1e-4)


def test_the_service_stores_what_pyhf_certifies_where_the_batched_engine_gives_up(facility, dora):
    bkg, patches = one_sided_zero_yield()
    job = submit(
        facility, dora, {"workspace": bkg, "patches": patches, "settings": {"engine": "batched"}}
    )
    assert wait_job(facility, dora, job["id"], timeout=600)["state"] == "done"
    (result,) = results(facility, dora, job["id"])
    assert result["status"] == "converged", result["diagnostics"]
    assert result["certificate"]["ok"] is True
    if result["engine"] == "batched":  # the engine learnt this case
        return
    assert result["engine"] == "pyhf"
    assert result["provenance"]["rung"] == "pyhf-scipy"
    ladder = result["provenance"]["ladder"]
    assert [(a["rung"], a["status"]) for a in ladder] == [
        ("batched", "not_converged"),
        ("pyhf-scipy", "converged"),
    ]
    assert ladder[0]["diagnostics"]["reason"]
    assert result["timings"]["ladder_pyhf-scipy"] > 0
    alone = PyhfEngine().run_one(FitTask(workspace=bkg, patches=tuple(patches)), 0)
    assert alone.status == "converged"
    assert result["values"]["cls_obs"] == pytest.approx(alone.values["cls_obs"], rel=1e-6)


def test_not_converged_is_stored_only_with_every_rung(facility, dora):
    bkg, patches = zero_yield_bins()
    job = submit(
        facility, dora, {"workspace": bkg, "patches": patches, "settings": {"engine": "batched"}}
    )
    assert wait_job(facility, dora, job["id"], timeout=600)["state"] == "done"
    (result,) = results(facility, dora, job["id"])
    if result["status"] == "converged":  # the batched engine certified it
        assert result["engine"] == "batched"
        assert result["certificate"]["ok"] is True
        return
    assert result["status"] == "not_converged"
    assert result["values"] == {}
    rungs = [a["rung"] for a in result["provenance"]["ladder"]]
    assert rungs == ["batched", "pyhf-scipy", "pyhf-scipy-tight", "pyhf-minuit"]
    assert all(a["status"] == "not_converged" for a in result["provenance"]["ladder"])
    assert all(a["diagnostics"].get("reason") for a in result["provenance"]["ladder"][1:])
    assert "no method converged" in result["diagnostics"]["reason"]
    # and pyhf alone does not converge on it either
    alone = PyhfEngine().run_one(FitTask(workspace=bkg, patches=tuple(patches)), 0)
    assert alone.status != "converged"


def test_a_fit_no_rung_may_finish_climbs_every_rung_and_is_stored_not_converged(facility, dora):
    """The service's whole ladder, whatever the engine has learnt: one iteration (``maxiter``
    applies to every rung) lets no method finish, so the batched engine's attempt is followed
    by every pyhf rung, each recorded with its reason, before ``not_converged`` is stored."""
    bkg, patches = pinned_at_bound()
    settings = {"engine": "batched", "maxiter": 1}
    job = submit(facility, dora, {"workspace": bkg, "patches": patches, "settings": settings})
    assert wait_job(facility, dora, job["id"], timeout=600)["state"] == "done"
    (result,) = results(facility, dora, job["id"])
    assert result["status"] == "not_converged"
    assert result["values"] == {}
    ladder = result["provenance"]["ladder"]
    assert [(a["rung"], a["status"]) for a in ladder] == [
        ("batched", "not_converged"),
        ("pyhf-scipy", "not_converged"),
        ("pyhf-scipy-tight", "not_converged"),
        ("pyhf-minuit", "not_converged"),
    ]
    assert all("limit" in a["diagnostics"]["reason"] for a in ladder[1:])
    assert "no method converged" in result["diagnostics"]["reason"]
