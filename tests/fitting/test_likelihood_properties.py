"""The batched model is exactly pyhf's likelihood: NLL, gradient and Hessian (issue 16).

Hypothesis generates workspaces that cover every modifier type the engine supports and
their edge cases: zero and negative nominal yields, ``hi == lo`` and one-sided
normsys/histosys, staterror and shapesys on bins with zero yield or zero uncertainty, lumi on
some samples only, a systematic shared across channels as normsys in one and histosys in
another, a normsys whose code4 polynomial turns negative, bins with zero observed events,
parameters with user-set bounds, inits or ``fixed``, and stiff Poisson constraints with
``tau`` up to 1e12. At random points inside the bounds the engine's NLL is compared with
pyhf's ``twice_nll`` (numpy backend) and its analytic gradient and Hessian with torch
autograd through pyhf's pytorch backend.

Tolerances. pyhf sums terms whose magnitudes (``n ln nu``, ``a ln(gamma tau)``) are far
larger than the NLL itself; each carries float64 rounding (``eps = 2.2e-16``) of its own size.
The comparison therefore allows ``TOL_ULPS * eps * S`` where ``S`` is the sum of those
magnitudes (a few hundred for ordinary workspaces, 1e13 for ``tau = 1e12``) plus the value
itself (Gaussian terms with a tiny sigma), and for the
derivatives ``TOL_ULPS * eps`` times the size of the terms of each component (``tau`` for
the gradient of a stiff constraint). Where the two disagree beyond that, the engine's
deviance form is the accurate one (``tests/fitting/test_batched_deviance.py`` checks it
against a 50-digit evaluation); pyhf's rounding is what the tolerance absorbs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyhf
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from afhub.fitting.batched.model import BatchedModel
from afhub.fitting.batched.spec import compile_spec

EPS = float(np.finfo(float).eps)
TOL_ULPS = 64
N_POINTS = 3


@st.composite
def edge_workspaces(draw) -> dict[str, Any]:
    n_channels = draw(st.integers(1, 3))
    stiff_tau = draw(st.sampled_from([None, 1e6, 1.9e11, 1e12]))
    channels, observations = [], []
    params: list[dict[str, Any]] = [
        {"name": "lumi", "auxdata": [1.0], "sigmas": [0.02], "bounds": [[0.8, 1.2]], "inits": [1.0]}
    ]
    for ci in range(n_channels):
        nb = draw(st.integers(1, 3))
        bkg = [draw(st.floats(5.0, 200.0)) for _ in range(nb)]
        # a sample with a zero bin and possibly a small negative one (the total stays > 0)
        minor = [draw(st.sampled_from([0.0, -0.5, 1.0, 4.0])) for _ in range(nb)]
        sig = [draw(st.floats(0.0, 20.0)) for _ in range(nb)]
        zero_unc = draw(st.booleans())
        stat = [0.0 if (zero_unc and b == 0) else b * draw(st.floats(0.0, 0.2)) for b in bkg]
        shape_unc = [
            0.0 if draw(st.booleans()) and i == 0 else max(m, 0) * 0.3 for i, m in enumerate(minor)
        ]
        kind = draw(st.sampled_from(["two-sided", "one-sided", "equal"]))
        hi = 1 + draw(st.floats(0.01, 0.3))
        lo = {"two-sided": 1 - draw(st.floats(0.01, 0.3)), "one-sided": 1.0, "equal": hi}[kind]
        up = [b * (1 + draw(st.floats(0.0, 0.2))) for b in bkg]
        dn = {
            "two-sided": [b * (1 - draw(st.floats(0.0, 0.2))) for b in bkg],
            "one-sided": list(bkg),
            "equal": list(up),
        }[kind]
        shared = (
            {"name": "shared_sys", "type": "normsys", "data": {"hi": 1.05, "lo": 0.97}}
            if ci % 2 == 0
            else {
                "name": "shared_sys",
                "type": "histosys",
                "data": {"hi_data": [b * 1.04 for b in bkg], "lo_data": [b * 0.98 for b in bkg]},
            }
        )
        bkg_mods = [
            {"name": "lumi", "type": "lumi", "data": None},
            {"name": f"norm_{ci}", "type": "normsys", "data": {"hi": hi, "lo": lo}},
            {"name": f"shape_{ci}", "type": "histosys", "data": {"hi_data": up, "lo_data": dn}},
            {"name": f"stat_{ci}", "type": "staterror", "data": stat},
            shared,
        ]
        minor_mods = [  # no lumi here: lumi on some samples only
            {"name": f"stat_{ci}", "type": "staterror", "data": [abs(m) * 0.1 for m in minor]},
            {"name": f"minor_shape_{ci}", "type": "shapesys", "data": shape_unc},
            {"name": "k_minor", "type": "normfactor", "data": None},
        ]
        samples = [
            {
                "name": "signal",
                "data": sig,
                "modifiers": [
                    {"name": "mu", "type": "normfactor", "data": None},
                    {"name": "lumi", "type": "lumi", "data": None},
                ],
            },
            {"name": "bkg", "data": bkg, "modifiers": bkg_mods},
            {"name": "minor", "data": minor, "modifiers": minor_mods},
        ]
        if draw(st.booleans()):
            # a normsys whose code4 polynomial turns negative between -1 and 0 (seen in a
            # published likelihood): pyhf multiplies the yield by the negative factor
            samples.append(
                {
                    "name": "tiny",
                    "data": [0.5] * nb,
                    "modifiers": [
                        {
                            "name": "extreme_sys",
                            "type": "normsys",
                            "data": {"hi": 105.646, "lo": 0.01},
                        }
                    ],
                }
            )
        if stiff_tau is not None and ci == 0:
            yield_ = 435.0
            samples.append(
                {
                    "name": "stiff",
                    "data": [yield_] + [0.0] * (nb - 1),
                    "modifiers": [
                        {
                            "name": "stiff_gamma",
                            "type": "shapesys",
                            "data": [yield_ / math.sqrt(stiff_tau)] + [0.0] * (nb - 1),
                        }
                    ],
                }
            )
        total = [
            b + m + s + (435.0 if stiff_tau and ci == 0 and i == 0 else 0)
            for i, (b, m, s) in enumerate(zip(bkg, minor, sig, strict=True))
        ]
        obs = [
            0.0 if draw(st.booleans()) and i == nb - 1 else float(round(t))
            for i, t in enumerate(total)
        ]
        channels.append({"name": f"ch{ci}", "samples": samples})
        observations.append({"name": f"ch{ci}", "data": obs})
    if draw(st.booleans()):
        params.append({"name": "mu", "bounds": [[-1.0, 8.0]], "inits": [0.5]})
    if draw(st.booleans()):
        params.append({"name": "k_minor", "fixed": True, "inits": [1.2]})
    if draw(st.booleans()):
        params.append({"name": "norm_0", "bounds": [[-2.0, 2.0]]})
    return {
        "channels": channels,
        "observations": observations,
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": params}}],
        "version": "1.0.0",
    }


def _points(model: BatchedModel, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    lo = torch.maximum(model.lower, model.init - 1.2)
    hi = torch.minimum(model.upper, model.init + 1.2)
    # multiplicative parameters (gammas, normfactors, lumi) stay near their inits
    mult = model.lower >= 0
    lo = torch.where(mult, torch.maximum(lo, 0.7 * model.init), lo)
    hi = torch.where(mult, torch.minimum(hi, 1.3 * model.init + 1e-9), hi)
    x = lo + torch.rand(model.init.shape, generator=gen, dtype=torch.float64) * (hi - lo)
    return torch.where(model.free, x, model.init)


SETTINGS = settings(
    max_examples=15,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)


@SETTINGS
@given(spec=edge_workspaces())
def test_nll_gradient_and_hessian_are_pyhfs(spec):
    compiled = compile_spec(spec)
    model, data = BatchedModel.from_compiled([compiled] * N_POINTS)
    x = _points(model, seed=len(compiled.par_names))
    # stiff gammas within a few standard deviations (1/sqrt(tau)) of 1
    for j in range(model.q_par.shape[1]):
        tau = float(model.q_tau[0, j])
        if model.q_mask[0, j] > 0 and tau > 1e4:
            p = int(model.q_par[0, j])
            if bool(model.free[0, p]):
                x[:, p] = 1 + torch.tensor([-2.0, 0.5, 3.0]) / math.sqrt(tau)
    nll = model.nll(x, data)
    _, grad, hess = model.nll_grad_hess(x, data)

    pyhf.set_backend("numpy")
    ws = pyhf.Workspace(spec)
    pmodel = ws.model()
    pdata = np.asarray(ws.data(pmodel), dtype=float)
    order = np.zeros(model.n_pars, dtype=int)
    for name, sl in compiled.par_slices.items():
        order[sl] = np.arange(pmodel.config.npars)[pmodel.config.par_slice(name)]
    n_main = sum(pmodel.config.channel_nbins.values())
    valid = [True] * N_POINTS
    for i in range(N_POINTS):
        pars = np.zeros(pmodel.config.npars)
        pars[order] = x[i].numpy()
        twice = float(np.asarray(pyhf.infer.mle.twice_nll(pars, pdata, pmodel)).ravel()[0])
        if not math.isfinite(twice):
            # outside pyhf's model (a bin with events and a non-positive expectation): the
            # engine must say so too (an infinite NLL), and there is nothing to differentiate
            assert not math.isfinite(float(nll[i]))
            valid[i] = False
            continue
        # sizes of the summed terms (main Poisson and Poisson constraints), see module doc
        expected = np.asarray(pmodel.expected_data(pars, include_auxdata=True), dtype=float)
        scale = float(
            np.sum(np.abs(expected)) + np.sum(np.abs(pdata * np.log(np.abs(expected) + 1e-300)))
        )
        scale += abs(twice)  # Gaussian terms with tiny sigmas are as large as the value
        assert abs(2 * float(nll[i]) - twice) <= TOL_ULPS * EPS * scale + 1e-12, (twice, scale)

    # gradient and Hessian: autograd through pyhf's pytorch backend
    pyhf.set_backend("pytorch")
    try:
        tmodel = pyhf.Workspace(spec).model()
        tdata = torch.as_tensor(pdata)
        for i in range(N_POINTS):
            if not valid[i]:
                continue
            pars = torch.zeros(tmodel.config.npars, dtype=torch.float64)
            pars[torch.as_tensor(order)] = x[i]

            def f(z):
                return -tmodel.logpdf(z, tdata)[0]

            g_ref = torch.autograd.functional.jacobian(f, pars)[order]
            h_ref = torch.autograd.functional.hessian(f, pars)[order][:, order]
            free = model.free[i]
            # pyhf's code4 in torch.where gives NaN second derivatives through its unused
            # branch (log of the polynomial where it is negative); there the reference is
            # autograd through the engine's own NLL, an evaluation independent of the
            # analytic formula under test
            if not bool(torch.isfinite(h_ref).all()):
                one = model.take(torch.tensor([i]))
                one_data = data.take(torch.tensor([i]))
                h_own = torch.autograd.functional.hessian(
                    lambda z, m=one, d=one_data: m.nll(z[None], d)[0], x[i]
                )
                h_ref = torch.where(torch.isfinite(h_ref), h_ref, h_own)
            hd = h_ref.diagonal().abs()
            g_tol = TOL_ULPS * EPS * (hd + g_ref.abs() + 1)
            assert torch.all((grad[i] - g_ref).abs()[free] <= g_tol[free]), (
                (grad[i] - g_ref)[free],
                g_tol[free],
            )
            fm = free.unsqueeze(0) & free.unsqueeze(1)
            h_tol = 1e-9 * (h_ref.abs() + torch.sqrt(hd.unsqueeze(0) * hd.unsqueeze(1)) + 1)
            assert torch.all((hess[i] - h_ref).abs()[fm] <= h_tol[fm])
    finally:
        pyhf.set_backend("numpy")
        torch.set_default_dtype(torch.float32)
    assert n_main > 0
