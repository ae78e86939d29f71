"""The batched engine against pyhf: hypotest, upper limits, fits, the engine contract."""

from __future__ import annotations

import numpy as np
import pyhf
import pytest
import torch

from afhub.fitting.batched import BatchedEngine
from afhub.fitting.types import FitSettings, FitTask
from tests.fitting.batched_helpers import pyhf_hypotest
from tests.fitting.batched_workspaces import simple_workspace

# PROVENANCE.md (pyhf 0.7.6, numpy, defaults, mu=1): RegionA + patch.sbottom_1300_205_60
REFERENCE_PATCH = "patch.sbottom_1300_205_60.json"
REFERENCE_CLS_OBS = 0.24443628
REFERENCE_CLS_EXP = [0.090224, 0.193783, 0.384322, 0.655775, 0.891042]


@pytest.fixture(scope="module")
def engine() -> BatchedEngine:
    return BatchedEngine()


def _signal_patch(scale: float) -> list[dict]:
    """Replace the signal yields of the simple workspace (a patchset-like variation)."""
    return [
        {"op": "replace", "path": "/channels/0/samples/0/data", "value": [5 * scale, 8 * scale]}
    ]


def _pyhf(spec, mu, test_stat="qtilde"):
    return pyhf_hypotest(spec, [], mu, test_stat=test_stat)


def test_reference_point_matches_provenance(
    engine, sbottom_regionA_bkg, sbottom_regionA_reference_patch
):
    task = FitTask(
        workspace=sbottom_regionA_bkg,
        patches=({"name": REFERENCE_PATCH, "patch": sbottom_regionA_reference_patch},),
        workspace_sha256="abc",
    )
    assert engine.unsupported_reason(task) == [None]
    (result,) = engine.run(task)
    assert result.engine == "batched"
    assert result.status == "converged"
    assert result.patch == REFERENCE_PATCH
    assert result.values["cls_obs"][0] == pytest.approx(REFERENCE_CLS_OBS, abs=1e-5)
    np.testing.assert_allclose(result.values["cls_exp"][0], REFERENCE_CLS_EXP, atol=1e-5)
    prov = result.provenance
    assert prov["engine"] == "batched"
    assert prov["torch"] == torch.__version__
    assert prov["device"] == "cpu"
    assert prov["workspace_sha256"] == "abc"
    assert prov["settings"]["test_stat"] == "qtilde"
    fits = result.diagnostics["fits"]
    for key in ("free_data", "asimov_generation", "free_asimov"):
        assert fits[key]["success"] is True
        assert fits[key]["nit"] >= 0
        assert fits[key]["newton_decrement"] < 1e-9
        assert np.isfinite(fits[key]["twice_nll"])
    assert len(fits["fixed_poi_data"]) == len(fits["fixed_poi_asimov"]) == 1
    assert result.timings["total"] > 0
    assert result.timings["batch_size"] == 1


@pytest.mark.parametrize("test_stat", ["qtilde", "q"])
def test_several_poi_values_and_patches_match_pyhf(engine, test_stat):
    spec = simple_workspace()
    scales = [0.5, 1.0, 3.0]
    mus = (0.5, 1.0, 2.0)
    task = FitTask(
        workspace=spec,
        patches=tuple({"name": f"s{s}", "patch": _signal_patch(s)} for s in scales),
        settings=FitSettings(test_stat=test_stat, poi_values=mus),
    )
    results = engine.run(task)
    assert [r.patch for r in results] == [f"s{s}" for s in scales]
    import jsonpatch

    for s, r in zip(scales, results, strict=True):
        assert r.status == "converged"
        patched = jsonpatch.apply_patch(spec, _signal_patch(s))
        for k, mu in enumerate(mus):
            ref = _pyhf(patched, mu, test_stat)
            assert r.values["cls_obs"][k] == pytest.approx(ref.cls_obs, abs=1e-5)
            np.testing.assert_allclose(r.values["cls_exp"][k], ref.cls_exp, atol=1e-5)


def test_upper_limit_matches_pyhf_scan(engine):
    spec = simple_workspace()
    scan = (0.0, 3.0, 13)
    task = FitTask(
        workspace=spec, operation="upper_limit", settings=FitSettings(scan=scan, level=0.05)
    )
    (result,) = engine.run(task)
    assert result.status == "converged"
    assert result.patch is None
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-10))
    ws = pyhf.Workspace(spec)
    model = ws.model()
    obs, exp = pyhf.infer.intervals.upper_limits.upper_limit(
        ws.data(model), model, scan=np.linspace(*scan[:2], scan[2]), level=0.05
    )
    assert result.values["obs_limit"] == pytest.approx(float(obs), abs=1e-4)
    np.testing.assert_allclose(result.values["exp_limits"], np.asarray(exp, float), atol=1e-4)
    assert len(result.values["cls_obs"]) == scan[2]
    assert len(result.diagnostics["fits"]["fixed_poi_data"]) == scan[2]


def test_fit_matches_pyhf_mle_and_finite_difference_errors(engine):
    spec = simple_workspace()
    (result,) = engine.run(FitTask(workspace=spec, operation="fit"))
    assert result.status == "converged"
    pyhf.set_backend("numpy", pyhf.optimize.scipy_optimizer(tolerance=1e-12))
    ws = pyhf.Workspace(spec)
    model = ws.model()
    data = ws.data(model)
    best, twice_nll = pyhf.infer.mle.fit(data, model, return_fitted_val=True)
    # the batched minimum is at least as low as pyhf's, and the same point
    assert result.values["twice_nll"] <= float(twice_nll) + 1e-8
    ours = np.zeros(model.config.npars)
    for name, values in result.values["parameters"].items():
        ours[model.config.par_slice(name)] = values
    np.testing.assert_allclose(ours, best, atol=2e-4)
    # uncertainties: inverse of a finite-difference Hessian of pyhf's NLL
    free = [
        i
        for i, (f, (lo, hi)) in enumerate(
            zip(model.config.suggested_fixed(), model.config.suggested_bounds(), strict=True)
        )
        if not f and lo + 1e-6 < ours[i] < hi - 1e-6
    ]

    def nll(p):
        return float(np.asarray(pyhf.infer.mle.twice_nll(p, data, model)).ravel()[0]) / 2

    h = 1e-4
    hess = np.zeros((len(free), len(free)))
    for a, i in enumerate(free):
        for b, j in enumerate(free):
            pp, pm, mp, mm = (ours.copy() for _ in range(4))
            pp[i] += h
            pp[j] += h
            pm[i] += h
            pm[j] -= h
            mp[i] -= h
            mp[j] += h
            mm[i] -= h
            mm[j] -= h
            hess[a, b] = (nll(pp) - nll(pm) - nll(mp) + nll(mm)) / (4 * h * h)
    errors = np.sqrt(np.diag(np.linalg.inv(hess)))
    unc = np.zeros(model.config.npars)
    for name, values in result.values["uncertainties"].items():
        unc[model.config.par_slice(name)] = values
    np.testing.assert_allclose(unc[free], errors, rtol=1e-3)


def test_unsupported_settings_fall_back_with_reasons(engine):
    spec = simple_workspace()
    patches = ({"name": "a", "patch": []}, {"name": "b", "patch": []})
    for settings, fragment in [
        (FitSettings(calctype="toybased"), "asymptotics"),
        (FitSettings(normsys_interpcode="code1"), "code1"),
        (FitSettings(histosys_interpcode="code0"), "code0"),
        (FitSettings(test_stat="q0"), "q0"),
    ]:
        task = FitTask(workspace=spec, patches=patches, settings=settings)
        reasons = engine.unsupported_reason(task)
        assert len(reasons) == 2
        assert all(r is not None and fragment in r for r in reasons)
        assert engine.run(task) == []


def test_per_patch_fallback_keeps_order(engine):
    spec = simple_workspace()
    bad = [
        {
            "op": "add",
            "path": "/channels/1/samples/0/modifiers/-",
            "value": {"name": "stat_SR", "type": "staterror", "data": [1.0, 1.0]},
        }
    ]
    task = FitTask(
        workspace=spec,
        patches=(
            {"name": "ok1", "patch": _signal_patch(1.0)},
            {"name": "bad", "patch": bad},
            {"name": "broken", "patch": [{"op": "remove", "path": "/channels/7"}]},
            {"name": "ok2", "patch": _signal_patch(2.0)},
        ),
    )
    reasons = engine.unsupported_reason(task)
    assert reasons[0] is None
    assert reasons[3] is None
    assert "staterror" in reasons[1]
    assert "patch" in reasons[2]
    results = engine.run(task)
    assert [r.patch for r in results] == ["ok1", "ok2"]
    assert all(r.engine == "batched" and r.status == "converged" for r in results)


def test_non_converged_fits_report_no_values():
    engine = BatchedEngine(maxiter=1)
    (result,) = engine.run(FitTask(workspace=simple_workspace()))
    assert result.status == "not_converged"
    assert result.values == {}
    assert "reason" in result.diagnostics
    assert any(not f["success"] for f in result.diagnostics["fits"]["fixed_poi_data"]) or any(
        not result.diagnostics["fits"][k]["success"]
        for k in ("free_data", "asimov_generation", "free_asimov")
    )


def test_poi_outside_bounds_fails_like_pyhf(engine):
    task = FitTask(workspace=simple_workspace(), settings=FitSettings(poi_values=(1.0, 20.0)))
    (result,) = engine.run(task)
    assert result.status == "failed"
    assert result.values == {}
    assert "bounds" in result.diagnostics["reason"]


def test_chunked_batches_give_the_same_answer():
    spec = simple_workspace()
    patches = tuple({"name": f"s{s}", "patch": _signal_patch(s)} for s in (0.5, 1, 2, 4, 8))
    task = FitTask(workspace=spec, patches=patches, settings=FitSettings(poi_values=(1.0, 2.0)))
    whole = BatchedEngine().run(task)
    chunked = BatchedEngine(chunk_size=3).run(task)
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_allclose(a.values["cls_obs"], b.values["cls_obs"], atol=1e-9)
        np.testing.assert_allclose(a.values["cls_exp"], b.values["cls_exp"], atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    spec = simple_workspace()
    patches = tuple({"name": f"s{s}", "patch": _signal_patch(s)} for s in (0.5, 1, 2))
    task = FitTask(workspace=spec, patches=patches)
    cpu = BatchedEngine().run(task)
    gpu = BatchedEngine(device="cuda").run(task)
    for a, b in zip(cpu, gpu, strict=True):
        assert b.provenance["device"].startswith("cuda")
        np.testing.assert_allclose(a.values["cls_obs"], b.values["cls_obs"], atol=1e-8)
