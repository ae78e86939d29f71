"""The batched HistFactory model against pyhf: interpolation codes, NLL, exact derivatives."""

from __future__ import annotations

import json

import numpy as np
import pyhf
import pytest
import torch

from afhub.fitting.batched.interpolation import code4, code4_coefficients, code4p_weights
from afhub.fitting.batched.model import BatchedModel
from afhub.fitting.batched.spec import SampleCache, Unsupported, apply_patch, compile_spec
from tests.fitting.batched_helpers import pyhf_twice_nll
from tests.fitting.batched_workspaces import simple_workspace

ALPHAS = np.array([-3.0, -1.2, -1.0, -0.7, -0.2, 0.0, 0.3, 0.999, 1.0, 1.5, 4.0])


def _pyhf_model(spec):
    pyhf.set_backend("numpy")
    ws = pyhf.Workspace(spec)
    return ws.model(), ws


def _random_points(model: BatchedModel, n: int, seed: int) -> torch.Tensor:
    """Points inside the bounds (at most +-2 for the Gaussian-constrained parameters)."""
    gen = torch.Generator().manual_seed(seed)
    lo = torch.maximum(model.lower, model.init - 2.0)
    hi = torch.minimum(model.upper, model.init + 2.0)
    lo = torch.where(model.lower > 0, torch.maximum(lo, 0.2 * model.init), lo)
    u = torch.rand((n, *model.init.shape[1:]), generator=gen, dtype=torch.float64)
    x = lo + u * (hi - lo)
    return torch.where(model.free, x, model.init)


@pytest.mark.parametrize(("hi", "lo"), [(1.1, 0.85), (1.3, 0.95), (0.9, 1.2), (1.02, 0.5)])
def test_code4_matches_pyhf(hi, lo):
    interp = pyhf.interpolators.code4([[[[lo], [1.0], [hi]]]])
    expected = np.asarray(interp(np.array([ALPHAS])))[0, 0, :, 0]
    a = torch.tensor(ALPHAS)
    coef = torch.tensor(code4_coefficients(np.full(a.shape, hi), np.full(a.shape, lo)))
    log_val, d1, d2, _ = code4(
        a, torch.full_like(a, np.log(hi)), torch.full_like(a, np.log(lo)), coef
    )
    np.testing.assert_allclose(torch.exp(log_val).numpy(), expected, rtol=1e-12)
    # derivatives by central differences of pyhf's own interpolation (away from +-1 kinks)
    h = 1e-5
    plus = np.log(np.asarray(interp(np.array([ALPHAS + h])))[0, 0, :, 0])
    minus = np.log(np.asarray(interp(np.array([ALPHAS - h])))[0, 0, :, 0])
    np.testing.assert_allclose(d1.numpy(), (plus - minus) / (2 * h), atol=1e-6)
    second = (plus - 2 * np.log(expected) + minus) / h**2
    smooth = np.abs(np.abs(ALPHAS) - 1) > 1e-2
    np.testing.assert_allclose(d2.numpy()[smooth], second[smooth], atol=1e-3)


@pytest.mark.parametrize(("up", "dn"), [(3.0, 2.0), (1.0, -0.5), (-2.0, 4.0)])
def test_code4p_matches_pyhf(up, dn):
    nom = 10.0
    interp = pyhf.interpolators.code4p([[[[nom - dn], [nom], [nom + up]]]])
    expected = np.asarray(interp(np.array([ALPHAS])))[0, 0, :, 0]
    w_up, w_dn, dw_up, dw_dn, _d2w_up, _d2w_dn = code4p_weights(torch.tensor(ALPHAS))
    np.testing.assert_allclose((w_up * up + w_dn * dn).numpy(), expected, rtol=1e-12, atol=1e-12)
    h = 1e-6
    plus = np.asarray(interp(np.array([ALPHAS + h])))[0, 0, :, 0]
    minus = np.asarray(interp(np.array([ALPHAS - h])))[0, 0, :, 0]
    np.testing.assert_allclose(
        (dw_up * up + dw_dn * dn).numpy(), (plus - minus) / (2 * h), atol=1e-6
    )


def _check_model_against_pyhf(spec, n_points=6, seed=0):
    compiled = compile_spec(spec)
    model, data = BatchedModel.from_compiled([compiled] * n_points)
    pmodel, ws = _pyhf_model(spec)
    pdata = ws.data(pmodel)
    x = _random_points(model, n_points, seed)
    ours = 2 * model.nll(x, data)
    for i in range(n_points):
        theirs = pyhf_twice_nll(pmodel, pdata, compiled.par_slices, x[i].numpy())
        assert ours[i].item() == pytest.approx(theirs, rel=1e-11, abs=1e-9)
    # expected main data (the Asimov construction relies on it)
    main = model.expected_main(x)
    for i in range(n_points):
        pars = np.zeros(pmodel.config.npars)
        for name, sl in compiled.par_slices.items():
            pars[pmodel.config.par_slice(name)] = x[i, sl].numpy()
        exp = pmodel.expected_actualdata(pars)
        # pyhf orders channels by name; compare per channel
        ours_by_channel = {}
        offset = 0
        for ch in spec["channels"]:
            nb = len(ch["samples"][0]["data"])
            ours_by_channel[ch["name"]] = main[i, offset : offset + nb].numpy()
            offset += nb
        for ch in pmodel.config.channels:
            sl = pmodel.config.channel_slices[ch]
            np.testing.assert_allclose(ours_by_channel[ch], exp[sl], rtol=1e-12)


def _check_derivatives(model: BatchedModel, data, x):
    f, g, h = model.nll_grad_hess(x, data)
    xr = x.clone().requires_grad_(True)
    g_ref = torch.autograd.grad(model.nll(xr, data).sum(), xr)[0]
    h_ref = torch.autograd.functional.hessian(lambda z: model.nll(z, data).sum(), x)
    h_ref = torch.stack([h_ref[i, :, i, :] for i in range(x.shape[0])])
    torch.testing.assert_close(f, model.nll(x, data), rtol=1e-13, atol=1e-10)
    torch.testing.assert_close(g, g_ref, rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(h, h_ref, rtol=1e-10, atol=1e-8)


def test_nll_matches_pyhf_simple_workspace():
    _check_model_against_pyhf(simple_workspace())


def test_gradient_and_hessian_exact_simple_workspace():
    compiled = compile_spec(simple_workspace())
    model, data = BatchedModel.from_compiled([compiled] * 4)
    x = _random_points(model, 4, seed=1)
    # include a POI exactly at zero, where the linear-factor products vanish
    x[0, compiled.poi_index] = 0.0
    _check_derivatives(model, data, x)


def test_sbottom_model_matches_pyhf(sbottom_regionA_bkg, sbottom_regionA_reference_patch):
    spec = apply_patch(sbottom_regionA_bkg, sbottom_regionA_reference_patch)
    _check_model_against_pyhf(spec, n_points=3, seed=2)
    model, data = BatchedModel.from_compiled([compile_spec(spec)] * 2)
    _check_derivatives(model, data, _random_points(model, 2, seed=3))


def test_patch_application_leaves_inputs_unchanged(
    sbottom_regionA_bkg, sbottom_regionA_reference_patch
):
    before = json.dumps(sbottom_regionA_bkg, sort_keys=True)
    patched = apply_patch(sbottom_regionA_bkg, sbottom_regionA_reference_patch)
    assert json.dumps(sbottom_regionA_bkg, sort_keys=True) == before
    import jsonpatch

    reference = jsonpatch.apply_patch(sbottom_regionA_bkg, sbottom_regionA_reference_patch)
    assert json.dumps(patched, sort_keys=True) == json.dumps(reference, sort_keys=True)


def test_sample_cache_reuses_untouched_samples(sbottom_dir):
    from tests.fitting.batched_helpers import load_region

    bkg, patches = load_region(sbottom_dir, "RegionA")
    cache = SampleCache()
    names = sorted(patches)[:3]
    models = [compile_spec(apply_patch(bkg, patches[n]), cache=cache) for n in names]
    fresh = [compile_spec(apply_patch(bkg, patches[n])) for n in names]
    for a, b in zip(models, fresh, strict=True):
        assert a.par_names == b.par_names
        np.testing.assert_array_equal(a.nominal, b.nominal)
        np.testing.assert_array_equal(a.histo_up, b.histo_up)
    # background samples are compiled once, signal samples once per patch
    n_bkg_samples = sum(len(c["samples"]) for c in bkg["channels"])
    assert len(cache._items) <= n_bkg_samples + 2 * len(names)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (
            lambda s: s["channels"][0]["samples"][1]["modifiers"].append(
                {"name": "other_unc", "type": "shapesys", "data": [1.0, 1.0]}
            ),
            "shapesys 'other_unc' used on more than one sample",
        ),
        (
            lambda s: s["channels"][1]["samples"][0]["modifiers"].append(
                {"name": "stat_SR", "type": "staterror", "data": [1.0, 1.0]}
            ),
            "staterror",
        ),
        (lambda s: s["measurements"][0]["config"].update(poi="nope"), "POI"),
        (
            lambda s: s["channels"][0]["samples"][0]["modifiers"][2]["data"].update(lo=0.0),
            "normsys",
        ),
        (
            lambda s: s["measurements"][0]["config"]["parameters"].append(
                {"name": "mu", "fixed": True}
            ),
            "fixed",
        ),
    ],
)
def test_unsupported_specs_are_refused_with_a_reason(mutate, fragment):
    spec = simple_workspace()
    mutate(spec)
    with pytest.raises(Unsupported, match=fragment):
        compile_spec(spec)


def test_unsupported_interpolation_codes():
    with pytest.raises(Unsupported, match="code1"):
        compile_spec(simple_workspace(), normsys_interpcode="code1")
    with pytest.raises(Unsupported, match="code0"):
        compile_spec(simple_workspace(), histosys_interpcode="code0")
