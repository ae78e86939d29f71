"""Property-based comparison of the batched engine and pyhf on small random workspaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings

from afhub.fitting.batched import BatchedEngine
from afhub.fitting.batched.model import BatchedModel
from afhub.fitting.batched.spec import compile_spec
from afhub.fitting.types import FitSettings, FitTask
from tests.fitting.batched_helpers import compare_minima, pyhf_hypotest, pyhf_twice_nll
from tests.fitting.batched_workspaces import random_workspaces

ENGINE = BatchedEngine()
SETTINGS = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)


@SETTINGS
@given(spec=random_workspaces())
def test_nll_and_derivatives_match(spec):
    import pyhf

    compiled = compile_spec(spec)
    model, data = BatchedModel.from_compiled([compiled] * 3)
    gen = torch.Generator().manual_seed(0)
    lo = torch.maximum(model.lower, model.init - 1.5)
    hi = torch.minimum(model.upper, model.init + 1.5)
    lo = torch.where(model.lower > 0, torch.maximum(lo, 0.3 * model.init), lo)
    x = lo + torch.rand(model.init.shape, generator=gen, dtype=torch.float64) * (hi - lo)
    pyhf.set_backend("numpy")
    ws = pyhf.Workspace(spec)
    pmodel = ws.model()
    pdata = ws.data(pmodel)
    ours = (2 * model.nll(x, data)).tolist()
    for i in range(3):
        assert ours[i] == pytest.approx(
            pyhf_twice_nll(pmodel, pdata, compiled.par_slices, x[i].numpy()), rel=1e-11
        )
    _f, _g, h = model.nll_grad_hess(x, data)
    h_ref = torch.autograd.functional.hessian(lambda z: model.nll(z, data).sum(), x)
    h_ref = torch.stack([h_ref[i, :, i, :] for i in range(3)])
    torch.testing.assert_close(h, h_ref, rtol=1e-9, atol=1e-8)


@SETTINGS
@given(spec=random_workspaces())
def test_hypotest_matches_pyhf(spec):
    (result,) = ENGINE.run(FitTask(workspace=spec, settings=FitSettings(poi_values=(1.0,))))
    ref = pyhf_hypotest(spec, [], 1.0)
    if result.status != "converged":
        pytest.fail(f"batched engine did not converge: {result.diagnostics}")
    diffs = [abs(result.values["cls_obs"][0] - ref.cls_obs)] + [
        abs(a - b) for a, b in zip(result.values["cls_exp"][0], ref.cls_exp, strict=True)
    ]
    if not all(np.isfinite(diffs)) or max(diffs) > 1e-3:
        minima = compare_minima(spec, [])
        assert all(f["batched_lower_or_equal"] for f in minima["fits"].values()), (
            minima["fits"],
            spec,
        )
    else:
        assert np.isfinite(result.values["cls_obs"][0])
