"""Bins with no observed events may have a non-positive expectation, as in pyhf.

pyhf's Poisson term for ``n = 0`` is ``nu`` (``xlogy(0, nu) = 0``): finite for any ``nu``, so
pyhf's fits may pass through (and end at) points where such a bin's expected yield is zero
or negative (a one-sided histosys on a zero nominal yield). The engine treated any bin with
``nu <= 0`` as outside the model (infinite NLL) and gave up on these patches
(``tests/fitting/hard_cases.py``: ``one_sided_zero_yield``); it now follows pyhf and refuses
``nu <= 0`` only where ``n > 0`` (pyhf's log is not defined there).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from afhub.fitting.batched import BatchedEngine
from afhub.fitting.batched.model import BatchedModel
from afhub.fitting.batched.spec import apply_patch, compile_spec
from afhub.fitting.types import FitTask
from tests.fitting.batched_helpers import pyhf_hypotest, pyhf_twice_nll
from tests.fitting.hard_cases import one_sided_zero_yield


def test_nll_with_a_negative_expectation_in_an_empty_bin_is_pyhfs():
    import pyhf

    bkg, patches = one_sided_zero_yield()
    spec = apply_patch(bkg, patches[0]["patch"])
    compiled = compile_spec(spec)
    model, data = BatchedModel.from_compiled([compiled])
    x = model.init.clone()
    x[0, compiled.par_names.index("bsys")] = -0.5  # bin 0: background below 0
    x[0, compiled.poi_index] = 0.0
    assert float(model.expected_main(x)[0, 0]) < 0
    pyhf.set_backend("numpy")
    ws = pyhf.Workspace(spec)
    pmodel = ws.model()
    ref = pyhf_twice_nll(pmodel, ws.data(pmodel), compiled.par_slices, x[0].numpy())
    assert np.isfinite(ref)
    assert 2 * float(model.nll(x, data)[0]) == pytest.approx(ref, rel=1e-12)
    _, grad, hess = model.nll_grad_hess(x, data)
    assert bool(torch.isfinite(grad).all())
    assert bool(torch.isfinite(hess).all())


def test_one_sided_histosys_on_a_zero_yield_bin_converges_to_pyhfs_value():
    bkg, patches = one_sided_zero_yield()
    (result,) = BatchedEngine().run(FitTask(workspace=bkg, patches=tuple(patches)))
    assert result.status == "converged"
    ref = pyhf_hypotest(bkg, patches[0]["patch"], 1.0, tolerance=1e-10)
    assert result.values["cls_obs"][0] == pytest.approx(ref.cls_obs, abs=1e-6)
    np.testing.assert_allclose(result.values["cls_exp"][0], ref.cls_exp, atol=1e-5)
