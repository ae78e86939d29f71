"""The deviance form of the NLL: accurate differences where constraints are stiff (issue 16).

A ``shapesys`` of 0.001 on a yield of 435 gives a Poisson constraint with
``tau = (435 / 0.001)^2``, about 1.9e11: pyhf's ``twice_nll`` holds terms near 5e12 whose
float64 rounding (about 1e-3) is larger than the NLL differences a fit looks for.
``BatchedModel.nll_deviance`` must give those differences to 1e-9; the reference is the
same likelihood evaluated with 50 significant digits (mpmath) from the same float64 inputs.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pyhf
import pytest
import torch

from afhub.fitting.batched.model import BatchedModel
from afhub.fitting.batched.spec import compile_spec

STIFF = {
    "channels": [
        {
            "name": "SR",
            "samples": [
                {
                    "name": "stiff",
                    "data": [435.0],
                    "modifiers": [{"name": "stiff_gamma", "type": "shapesys", "data": [0.001]}],
                },
                {
                    "name": "signal",
                    "data": [12.0],
                    "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                },
            ],
        }
    ],
    "observations": [{"name": "SR", "data": [452.0]}],
    "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
    "version": "1.0.0",
}


def _reference_nll(mu: float, gamma: float, tau: float, aux: float, n: float) -> mpmath.mpf:
    """pyhf's NLL of the stiff workspace with 50 digits (inputs are the float64 values)."""
    with mpmath.workdps(50):
        mu, gamma, tau, aux, n = (mpmath.mpf(v) for v in (mu, gamma, tau, aux, n))
        nu = 435 * gamma + 12 * mu
        main = nu - n * mpmath.log(nu) + mpmath.loggamma(n + 1)
        rate = gamma * tau
        constraint = rate - aux * mpmath.log(rate) + mpmath.loggamma(aux + 1)
        return main + constraint


def test_deviance_differences_are_accurate_for_a_stiff_constraint():
    compiled = compile_spec(STIFF)
    model, data = BatchedModel.from_compiled([compiled])
    g_index = compiled.par_names.index("stiff_gamma")
    mu_index = compiled.par_names.index("mu")
    tau = float(model.q_tau[0, 0])
    aux = float(data.aux_poisson[0, 0])
    assert tau > 1e11
    assert aux == tau
    points = [(1.0, 1.0 + k * 3e-7) for k in range(-3, 4)] + [(1.3, 1.0 - 2e-6)]
    x = model.init.repeat(len(points), 1)
    for i, (mu, gamma) in enumerate(points):
        x[i, mu_index], x[i, g_index] = mu, gamma
    batch = model.take(torch.zeros(len(points), dtype=torch.long))
    bdata = data.take(torch.zeros(len(points), dtype=torch.long))
    dev = batch.nll_deviance(x, bdata).numpy()
    n = float(data.main[0, 0])
    ref = [
        _reference_nll(mu, float(x[i, g_index]), tau, aux, n) for i, (mu, _) in enumerate(points)
    ]
    for i in range(1, len(points)):
        exact = float(ref[i] - ref[0])
        assert abs((dev[i] - dev[0]) - exact) < 1e-9, (i, dev[i] - dev[0], exact)
    # the full NLL is the deviance plus the constant and matches pyhf's twice_nll
    pyhf.set_backend("numpy")
    pmodel = pyhf.Workspace(STIFF).model()
    pdata = pyhf.Workspace(STIFF).data(pmodel)
    full = batch.nll(x, bdata).numpy()
    for i in range(len(points)):
        pars = np.asarray(pmodel.config.suggested_init(), dtype=float)
        pars[pmodel.config.par_slice("mu")] = float(x[i, mu_index])
        pars[pmodel.config.par_slice("stiff_gamma")] = float(x[i, g_index])
        twice = float(np.asarray(pyhf.infer.mle.twice_nll(pars, pdata, pmodel)).ravel()[0])
        # both carry the rounding of terms near 2e12 (float64: about 1e-3 absolute)
        assert abs(2 * full[i] - twice) < 1e-2
        assert abs(full[i] - float(ref[i])) < 1e-2


def test_deviance_is_the_nll_without_its_constants_on_ordinary_terms():
    spec = {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "bkg",
                        "data": [50.0, 0.0, 7.0],
                        "modifiers": [
                            {"name": "sys", "type": "shapesys", "data": [5.0, 0.0, 1.0]},
                            {"name": "n1", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
                        ],
                    },
                    {
                        "name": "sig",
                        "data": [3.0, 1.0, 2.0],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [55.0, 0.0, 12.0]}],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
        "version": "1.0.0",
    }
    compiled = compile_spec(spec)
    model, data = BatchedModel.from_compiled([compiled])
    gen = torch.Generator().manual_seed(3)
    x = model.init + 0.2 * torch.rand(5, model.n_pars, generator=gen, dtype=torch.float64)
    batch = model.take(torch.zeros(5, dtype=torch.long))
    bdata = data.take(torch.zeros(5, dtype=torch.long))
    dev = batch.nll_deviance(x, bdata)
    const = batch.nll_constant(bdata)
    pyhf.set_backend("numpy")
    pmodel = pyhf.Workspace(spec).model()
    pdata = pyhf.Workspace(spec).data(pmodel)
    for i in range(5):
        pars = np.zeros(pmodel.config.npars)
        for name, sl in compiled.par_slices.items():
            pars[pmodel.config.par_slice(name)] = x[i, sl].numpy()
        twice = float(np.asarray(pyhf.infer.mle.twice_nll(pars, pdata, pmodel)).ravel()[0])
        assert float(2 * (dev[i] + const[i])) == pytest.approx(twice, rel=1e-12, abs=1e-12)
        # the deviance is non-negative: every term is measured from its own minimum
        assert float(dev[i]) >= 0
