"""The fallback ladder on hand-written hard cases: pyhf with SciPy, tight SciPy, MINUIT;
every attempt in the provenance; ``not_converged`` only when every rung fails."""

from __future__ import annotations

from dataclasses import replace

import pytest

from afhub.fitting.batched import BatchedEngine
from afhub.fitting.ladder import certify_batched_result, run_ladder, rungs_for
from afhub.fitting.types import FitSettings, FitTask, PatchResult
from tests.fitting.hard_cases import (
    degenerate_normfactors,
    one_sided_zero_yield,
    pinned_at_bound,
    removes_channel,
    tiny_signal,
)


def _batched(task: FitTask) -> list[PatchResult]:
    return [certify_batched_result(r, task) for r in BatchedEngine(num_threads=1).run(task)]


def test_rungs_in_order():
    task = FitTask(workspace={})
    assert rungs_for(task) == ("pyhf-scipy", "pyhf-scipy-tight", "pyhf-minuit")
    tight = replace(task, settings=FitSettings(tolerance=1e-12))
    assert rungs_for(tight) == ("pyhf-scipy", "pyhf-minuit")
    minuit = replace(task, settings=FitSettings(optimizer="minuit"))
    assert rungs_for(minuit)[0] == "pyhf-minuit"


def test_the_batched_attempt_is_recorded_and_pyhf_gives_the_value():
    bkg, patches = pinned_at_bound()
    task = FitTask(workspace=bkg, patches=tuple(patches), settings=FitSettings(maxiter=1))
    (stopped,) = _batched(task)
    assert stopped.status == "not_converged"
    result = run_ladder(replace(task, settings=FitSettings()), 0, [stopped])
    assert result.status == "converged"
    assert result.engine == "pyhf"
    assert result.certificate["ok"]
    assert result.certificate["cross_check"]["ok"]
    ladder = result.provenance["ladder"]
    assert [a["rung"] for a in ladder] == ["batched", "pyhf-scipy"]
    assert ladder[0]["status"] == "not_converged"
    assert ladder[0]["certificate"]["ok"] is False
    assert ladder[1]["certificate"]["ok"] is True
    assert result.timings["ladder_pyhf-scipy"] > 0
    assert "ladder_batched" in result.timings


def test_a_patch_that_removes_a_channel_is_certified_on_the_first_rung():
    bkg, patches = removes_channel()
    task = FitTask(workspace=bkg, patches=tuple(patches))
    reference = _batched(task)
    for i in range(2):
        result = run_ladder(task, i)
        assert [a["rung"] for a in result.provenance["ladder"]] == ["pyhf-scipy"]
        assert result.status == "converged"
        assert result.certificate["precision"]["ok"]
        assert reference[i].status == "converged"
        assert result.values["cls_obs"][0] == pytest.approx(
            reference[i].values["cls_obs"][0], abs=1e-5
        )


def test_every_rung_is_tried_and_recorded_before_not_converged():
    # two normfactors nearly degenerate: SLSQP stops 1e-4 above the minimum, 1.2e-5 with
    # tolerance 1e-10, MINUIT fails; the batched engine certifies this patch
    bkg, patches = degenerate_normfactors()
    task = FitTask(workspace=bkg, patches=tuple(patches))
    result = run_ladder(task, 0)
    attempts = result.provenance["ladder"]
    assert [a["rung"] for a in attempts] == ["pyhf-scipy", "pyhf-scipy-tight", "pyhf-minuit"]
    assert all(a["status"] == "not_converged" and a["reason"] for a in attempts)
    assert result.status == "not_converged"
    assert result.values == {}
    for rung in ("pyhf-scipy", "pyhf-scipy-tight", "pyhf-minuit"):
        assert rung in result.diagnostics["reason"]
    (batched,) = _batched(task)
    assert batched.status == "converged"
    assert batched.certificate["ok"]


def test_a_vanishing_signal_reaches_minuit():
    bkg, patches = tiny_signal()
    task = FitTask(workspace=bkg, patches=tuple(patches))
    (reference,) = _batched(task)
    result = run_ladder(task, 0)
    rungs = [(a["rung"], a["status"]) for a in result.provenance["ladder"]]
    assert rungs == [
        ("pyhf-scipy", "not_converged"),
        ("pyhf-scipy-tight", "not_converged"),
        ("pyhf-minuit", "converged"),
    ]
    assert result.values["cls_obs"][0] == pytest.approx(reference.values["cls_obs"][0], abs=1e-5)
    assert result.values["cls_obs"][0] < 0.9995  # not pyhf's 1.0


def test_a_lower_minimum_of_another_method_rejects_a_rung():
    bkg, patches = pinned_at_bound()
    task = FitTask(workspace=bkg, patches=tuple(patches))
    (batched,) = _batched(task)
    # an earlier attempt that reports the free fit to the data 0.5 lower in 2 NLL
    fits = batched.diagnostics["fits"]
    fits["free_data"] = {**fits["free_data"], "twice_nll": fits["free_data"]["twice_nll"] - 0.5}
    lower = PatchResult(
        patch=batched.patch,
        engine="batched",
        status="not_converged",
        diagnostics={"reason": "test", "fits": fits},
        provenance=batched.provenance,
    )
    result = run_ladder(task, 0, [lower])
    assert result.status == "not_converged"
    attempts = result.provenance["ladder"]
    assert all("lower by 0.5" in (a["certificate"].get("why") or "") for a in attempts[1:])
    assert "no method converged" in result.diagnostics["reason"]


def test_a_failure_no_optimizer_can_change_ends_the_ladder():
    bkg, patches = pinned_at_bound()
    task = FitTask(workspace=bkg, patches=tuple(patches), settings=FitSettings(poi_values=(-1.0,)))
    result = run_ladder(task, 0)
    assert result.status == "failed"
    assert [a["rung"] for a in result.provenance["ladder"]] == ["pyhf-scipy"]


def test_where_the_batched_engine_gives_up_pyhf_certifies():
    bkg, patches = one_sided_zero_yield()
    task = FitTask(workspace=bkg, patches=tuple(patches))
    (batched,) = _batched(task)
    # the batched engine gave up here until December 2026 and certifies it since; the
    # ladder, handed its attempt, must still certify pyhf's value, recorded after it
    result = run_ladder(task, 0, [batched])
    assert result.status == "converged"
    assert result.provenance["rung"] == "pyhf-scipy"
    assert [a["rung"] for a in result.provenance["ladder"]] == ["batched", "pyhf-scipy"]
    assert result.certificate["ok"]
    assert result.values["cls_obs"][0] == pytest.approx(0.3341, abs=1e-3)
