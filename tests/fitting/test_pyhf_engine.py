"""The pyhf engine equals pyhf run directly; non-converged fits never report values."""

from __future__ import annotations

import math
import re

import numpy as np
import pyhf
import pytest

from afhub.fitting.pyhf_engine import PyhfEngine, safe_message, stalled
from afhub.fitting.types import FitSettings, FitTask
from afhub.fitting.validation import canonical_sha256, validate_payload

RTOL = 1e-6


def tiny_workspace() -> dict:
    """One channel, a POI, a normsys and a histosys (so interpolation codes matter)."""
    return {
        "version": "1.0.0",
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [6.0, 4.0, 2.0],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "bkg",
                        "data": [40.0, 30.0, 20.0],
                        "modifiers": [
                            {"name": "norm", "type": "normsys", "data": {"hi": 1.3, "lo": 0.8}},
                            {
                                "name": "shape",
                                "type": "histosys",
                                "data": {
                                    "hi_data": [44.0, 31.0, 23.0],
                                    "lo_data": [37.0, 28.0, 18.5],
                                },
                            },
                            {"name": "stat", "type": "staterror", "data": [2.0, 1.5, 1.0]},
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [47.0, 33.0, 20.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
    }


def tiny_task(operation: str = "hypotest", patches=None, **settings) -> FitTask:
    request = {"workspace": tiny_workspace(), "operation": operation, "settings": settings}
    if patches is not None:
        request["patches"] = patches
    return validate_payload(request)


def direct_model(spec: dict, settings: FitSettings, backend: str = "numpy"):
    """The model and data built the way pyhf's own regression test builds them."""
    pyhf.set_backend(backend, pyhf.optimize.scipy_optimizer(tolerance=settings.tolerance))
    workspace = pyhf.Workspace(spec)
    model = workspace.model(
        modifier_settings={
            "normsys": {"interpcode": settings.normsys_interpcode},
            "histosys": {"interpcode": settings.histosys_interpcode},
        }
    )
    return model, workspace.data(model)


def direct_hypotest(spec: dict, settings: FitSettings, mu: float, backend: str = "numpy"):
    model, data = direct_model(spec, settings, backend)
    obs, exp = pyhf.infer.hypotest(
        mu, data, model, test_stat=settings.test_stat, return_expected_set=True
    )
    pyhf.set_backend("numpy")
    return float(obs), [float(e) for e in exp]


@pytest.fixture(scope="module")
def reference_task(sbottom_regionA_bkg, sbottom_regionA_reference_patch) -> FitTask:
    return validate_payload(
        {
            "workspace": sbottom_regionA_bkg,
            "patches": [{"name": "sbottom_1300_205_60", "patch": sbottom_regionA_reference_patch}],
        }
    )


@pytest.fixture(scope="module")
def reference_spec(sbottom_regionA_bkg, sbottom_regionA_reference_patch) -> dict:
    import jsonpatch

    return jsonpatch.apply_patch(sbottom_regionA_bkg, sbottom_regionA_reference_patch)


# ----------------------------------------------------------------------------- sbottom


@pytest.mark.slow
def test_hypotest_reference_point(reference_task, sbottom_regionA_bkg, sbottom_reference):
    result = PyhfEngine().run_one(reference_task, 0)
    assert result.status == "converged", result.diagnostics
    assert result.patch == "sbottom_1300_205_60"
    (obs,), (exp,) = result.values["cls_obs"], result.values["cls_exp"]

    # pyhf run directly, the way its regression test does (patch applied by pyhf itself)
    ws = pyhf.Workspace(sbottom_regionA_bkg)
    model = ws.model(
        patches=[reference_task.patches[0]["patch"]],
        modifier_settings={
            "normsys": {"interpcode": "code4"},
            "histosys": {"interpcode": "code4p"},
        },
    )
    pyhf.set_backend("numpy")
    d_obs, d_exp = pyhf.infer.hypotest(
        1.0, ws.data(model), model, test_stat="qtilde", return_expected_set=True
    )
    assert obs == pytest.approx(float(d_obs), rel=RTOL)
    assert exp == pytest.approx([float(e) for e in d_exp], rel=RTOL)

    # PROVENANCE.md (pyhf's regression test holds CLs_obs to 1e-5; the band has 6 decimals)
    assert obs == pytest.approx(sbottom_reference["cls_obs"], rel=1e-5)
    assert exp == pytest.approx(list(sbottom_reference["cls_exp"]), abs=1e-6)

    prov = result.provenance
    assert prov["pyhf"] == pyhf.__version__ == "0.7.6"
    assert prov["backend"] == "numpy"
    assert prov["backend_version"] == np.__version__
    assert prov["workspace_sha256"] == canonical_sha256(sbottom_regionA_bkg)
    assert prov["settings"]["normsys_interpcode"] == "code4"
    assert prov["engine"] == "pyhf"
    assert prov["patch"] == "sbottom_1300_205_60"
    assert result.timings["total"] >= result.timings["compute"] > 0
    assert result.diagnostics["n_fits"] >= 4
    assert all(f["success"] and f["nit"] > 1 for f in result.diagnostics["fits"])
    assert sbottom_reference["patch"] == "patch.sbottom_1300_205_60.json"


@pytest.mark.slow
def test_fit_equals_pyhf(reference_task, reference_spec):
    task = FitTask(**{**reference_task.__dict__, "operation": "fit"})
    result = PyhfEngine().run_one(task, 0)
    assert result.status == "converged", result.diagnostics

    model, data = direct_model(reference_spec, task.settings)
    pars, twice_nll = pyhf.infer.mle.fit(data, model, return_fitted_val=True)
    assert result.values["twice_nll"] == pytest.approx(float(twice_nll), rel=RTOL)
    for name in model.config.par_order:
        expected = np.asarray(pars)[model.config.par_slice(name)]
        assert result.values["parameters"][name] == pytest.approx(expected, rel=RTOL, abs=1e-12)
        unc = result.values["uncertainties"][name]
        assert all(math.isfinite(u) and u >= 0 for u in unc)
    assert result.values["uncertainties"]["mu_SIG"][0] > 0


@pytest.mark.slow
def test_upper_limit_equals_pyhf(reference_task, reference_spec, sbottom_reference):
    settings = FitSettings(scan=(0.5, 2.0, 2))
    task = FitTask(**{**reference_task.__dict__, "operation": "upper_limit", "settings": settings})
    result = PyhfEngine().run_one(task, 0)
    assert result.status == "converged", result.diagnostics

    model, data = direct_model(reference_spec, settings)
    obs, exp, (_scan, results) = pyhf.infer.intervals.upper_limits.upper_limit(
        data, model, scan=np.linspace(0.5, 2.0, 2), return_results=True
    )
    values = result.values
    assert values["poi_values"] == pytest.approx([0.5, 2.0])
    assert values["obs_limit"] == pytest.approx(float(obs), rel=RTOL)
    assert values["exp_limits"] == pytest.approx([float(e) for e in exp], rel=RTOL)
    assert values["cls_obs"] == pytest.approx([float(r[0]) for r in results], rel=RTOL)
    # the reference point's CLs at mu=1 (0.244) lies between the two scan points
    assert values["cls_obs"][0] > sbottom_reference["cls_obs"] > values["cls_obs"][1]


@pytest.mark.slow
def test_optimizer_stuck_at_initial_point_is_not_converged(reference_task, reference_spec):
    """A huge tolerance makes SLSQP stop after one iteration: pyhf returns CLs = 1 silently."""
    settings = FitSettings(tolerance=1000.0)
    model, data = direct_model(reference_spec, settings)
    silent = pyhf.infer.hypotest(1.0, data, model, test_stat="qtilde")
    pyhf.set_backend("numpy")
    assert math.isfinite(float(silent))  # pyhf itself reports a number, with no error

    task = FitTask(**{**reference_task.__dict__, "settings": settings})
    result = PyhfEngine().run_one(task, 0)
    assert result.status == "not_converged"
    assert result.values == {}
    assert "initial point" in result.diagnostics["reason"]
    failed = result.diagnostics["failed_fits"]
    assert failed
    assert all(f["nit"] <= 1 and f["grad_max"] > 0.1 for f in failed)
    assert result.to_dict()["values"] == {}


# ----------------------------------------------------------------------------- tiny model


def test_iteration_limit_is_not_converged():
    result = PyhfEngine().run_one(tiny_task(maxiter=1), 0)
    assert result.status == "not_converged"
    assert result.values == {}
    assert "Iteration limit" in result.diagnostics["reason"]
    assert any(not f["success"] for f in result.diagnostics["fits"])


def test_non_finite_cls_is_not_converged(monkeypatch):
    """pyhf#2232: NaN CLs without an exception must never come out as a value."""

    def nan_hypotest(*_args, **_kwargs):
        return np.float64("nan"), [np.float64(0.5)] * 5

    monkeypatch.setattr(pyhf.infer, "hypotest", nan_hypotest)
    result = PyhfEngine().run_one(tiny_task(), 0)
    assert result.status == "not_converged"
    assert result.values == {}
    assert "non-finite" in result.diagnostics["reason"]


@pytest.mark.parametrize("backend", ["numpy", "pytorch"])
@pytest.mark.parametrize(
    ("test_stat", "normsys", "histosys"), [("qtilde", "code4", "code4p"), ("q", "code1", "code0")]
)
def test_hypotest_settings_equal_pyhf(backend, test_stat, normsys, histosys):
    task = tiny_task(
        poi_values=[0.5, 1.5],
        test_stat=test_stat,
        normsys_interpcode=normsys,
        histosys_interpcode=histosys,
        backend=backend,
    )
    result = PyhfEngine().run_one(task, 0)
    # pyhf's SLSQP stops early on one fit of the code1/code0 model (Newton decrement about
    # 7e-4 in 2 NLL): the certificate refuses it and keeps pyhf's numbers aside
    if result.status != "converged":
        assert result.diagnostics["reason"].startswith("no certificate"), result.diagnostics
        assert not result.certificate["ok"]
    values = result.values or result.diagnostics["uncertified_values"]
    assert result.provenance["backend"] == backend
    for i, mu in enumerate((0.5, 1.5)):
        obs, exp = direct_hypotest(task.workspace, task.settings, mu, backend)
        assert values["cls_obs"][i] == pytest.approx(obs, rel=RTOL)
        assert values["cls_exp"][i] == pytest.approx(exp, rel=RTOL)
    assert pyhf.get_backend()[0].name == "numpy"  # the engine restores the backend


def test_interpolation_codes_change_the_result():
    a = PyhfEngine().run_one(tiny_task(normsys_interpcode="code1", histosys_interpcode="code0"), 0)
    b = PyhfEngine().run_one(tiny_task(normsys_interpcode="code4", histosys_interpcode="code4p"), 0)
    assert a.values["cls_obs"][0] != pytest.approx(b.values["cls_obs"][0], rel=1e-6)


def test_fit_uncertainties_match_an_autodiff_hessian():
    torch = pytest.importorskip("torch")
    result = PyhfEngine().run_one(tiny_task("fit"), 0)
    assert result.status == "converged", result.diagnostics

    settings = FitSettings()
    model, data = direct_model(tiny_workspace(), settings, backend="pytorch")
    best = torch.tensor(
        [v for name in model.config.par_order for v in result.values["parameters"][name]]
    )
    hess = torch.autograd.functional.hessian(
        lambda p: pyhf.infer.mle.twice_nll(p, data, model)[0], best
    )
    expected = torch.sqrt(torch.diag(2.0 * torch.linalg.inv(hess))).tolist()
    pyhf.set_backend("numpy")
    got = [u for name in model.config.par_order for u in result.values["uncertainties"][name]]
    assert got == pytest.approx(expected, rel=1e-3)


def test_fit_on_pytorch_equals_pyhf_and_numpy():
    pytest.importorskip("torch")
    on_numpy = PyhfEngine().run_one(tiny_task("fit"), 0)
    on_torch = PyhfEngine().run_one(tiny_task("fit", backend="pytorch"), 0)
    assert on_torch.status == on_numpy.status == "converged"
    assert on_numpy.diagnostics["uncertainty_method"] == "hessian-finite-difference"
    assert on_torch.diagnostics["uncertainty_method"] == "hessian-autodiff"

    model, data = direct_model(tiny_workspace(), FitSettings(), backend="pytorch")
    pars, twice_nll = pyhf.infer.mle.fit(data, model, return_fitted_val=True)
    pars = pyhf.tensorlib.tolist(pars)
    pyhf.set_backend("numpy")
    assert on_torch.values["twice_nll"] == pytest.approx(float(twice_nll), rel=RTOL)
    for name in model.config.par_order:
        expected = pars[model.config.par_slice(name)]
        assert on_torch.values["parameters"][name] == pytest.approx(expected, rel=RTOL)
        assert on_torch.values["uncertainties"][name] == pytest.approx(
            on_numpy.values["uncertainties"][name], rel=1e-3
        )


def test_patches_run_in_order():
    patches = [
        {
            "name": f"m{i}",
            "patch": [{"op": "replace", "path": "/channels/0/samples/0/data/0", "value": y}],
        }
        for i, y in enumerate((1.0, 12.0))
    ]
    task = tiny_task(patches=patches)
    results = PyhfEngine().run(task)
    assert [r.patch for r in results] == ["m0", "m1"]
    assert all(r.status == "converged" for r in results)
    # more signal in bin 0 is excluded more strongly
    assert results[1].values["cls_obs"][0] < results[0].values["cls_obs"][0]
    with pytest.raises(IndexError):
        PyhfEngine().run_one(task, 2)


def test_pyhf_errors_become_failed_with_a_safe_message():
    task = FitTask(workspace=tiny_workspace(), settings=FitSettings(normsys_interpcode="code0"))
    result = PyhfEngine().run_one(task, 0)
    assert result.status == "failed"
    assert result.values == {}
    assert "Traceback" not in result.diagnostics["reason"]
    assert not re.search(r"/(work|tmp|root|home|usr)\b", result.diagnostics["reason"])


def test_safe_message_strips_paths():
    message = safe_message(FileNotFoundError("/work/main/.venv/lib/x.json not found"))
    assert message == "FileNotFoundError: <path> not found"


def test_stalled_rule():
    assert stalled({"nit": 1, "grad_max": 21.0})
    assert stalled({"nit": 0, "grad_max": None})
    assert not stalled({"nit": 1, "grad_max": 1e-4})
    assert not stalled({"nit": 19, "grad_max": 5.0})
