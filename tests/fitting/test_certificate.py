"""Certificates: KKT, positive-definite reduced Hessian, precision of q, ordering and the
cross-check; pyhf results that pyhf calls converged but are not minima are caught."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from afhub.fitting import certificate
from afhub.fitting.batched import BatchedEngine
from afhub.fitting.ladder import certify_batched_result, needs_ladder
from afhub.fitting.pyhf_engine import PyhfEngine
from afhub.fitting.types import FitSettings, FitTask
from tests.fitting.hard_cases import pinned_at_bound, stiff, tiny_signal


def _point(x, grad, hess, lower=(-5.0, -5.0), upper=(5.0, 5.0), fixed=(False, False)):
    return certificate.certify_point(
        np.array(x, float),
        np.array(grad, float),
        np.array(hess, float),
        np.array(lower, float),
        np.array(upper, float),
        np.array(fixed, bool),
    )


def test_a_minimum_on_an_active_bound_is_certified():
    # 2NLL = (x0 + 1)^2 + x1^2 with x0 >= 0: the minimum is x0 = 0 with gradient 2 outward
    cert = _point([0.0, 0.0], [2.0, 0.0], [[2.0, 0.0], [0.0, 2.0]], lower=(0.0, -5.0))
    assert cert["ok"]
    assert cert["at_bounds"] == [0]
    assert cert["n_free"] == 1
    assert cert["kkt"] == 0.0
    assert cert["min_eigenvalue"] == 2.0


def test_a_saddle_a_slope_and_a_point_outside_the_bounds_are_refused():
    saddle = _point([0.0, 0.0], [0.0, 0.0], [[2.0, 0.0], [0.0, -2.0]])
    assert not saddle["ok"]
    assert "not positive definite" in saddle["why"]
    slope = _point([0.0, 0.0], [0.5, 0.0], [[2.0, 0.0], [0.0, 2.0]])
    assert not slope["ok"]
    assert "projected gradient" in slope["why"]
    shallow = _point([0.0, 0.0], [0.01, 0.0], [[1e-3, 0.0], [0.0, 2.0]])
    assert not shallow["ok"]
    assert "Newton decrement" in shallow["why"]
    outside = _point([6.0, 0.0], [0.0, 0.0], [[2.0, 0.0], [0.0, 2.0]])
    assert not outside["ok"]
    assert "outside" in outside["why"]
    fixed = _point([0.0, 0.0], [7.0, 0.0], [[-1.0, 0.0], [0.0, 2.0]], fixed=(True, False))
    assert fixed["ok"]  # a fixed parameter's gradient and curvature do not count


def test_precision_of_a_vanishing_test_statistic():
    fits = [
        {"fit": "asimov:free", "twice_nll": 10.0, "newton_decrement": 2.5e-6},
        {"fit": "asimov:poi=1", "twice_nll": 10.000001, "newton_decrement": 1e-9},
        {"fit": "data:free", "twice_nll": 12.0, "newton_decrement": 2.5e-6},
        {"fit": "data:poi=1", "twice_nll": 16.0, "newton_decrement": 1e-9},
    ]
    prec = certificate.precision(fits)
    assert not prec["ok"]
    assert prec["fit"] == "asimov:poi=1"
    assert prec["sqrt_q_error"] > certificate.SQRT_Q_TOL
    assert certificate.precision(fits[2:])["ok"]  # q = 4 is known well enough


def test_cross_check_refuses_a_minimum_another_method_undercuts():
    own = [("data:free", 10.0), ("data:poi=1", 12.0), ("asimov:free", 5.0)]
    fine = certificate.cross_check(own, {"other": [("data:free", 10.0 + 1e-3)]}, 1e-12, 1e-5)
    assert fine["ok"]
    assert fine["compared"] == 1
    worse = certificate.cross_check(own, {"other": [("data:poi=1", 11.9)]}, 1e-12, 1e-5)
    assert not worse["ok"]
    assert "lower by 0.1" in worse["why"]
    # where 2 NLL cannot be evaluated to 1e-8 the comparison decides nothing
    stiff_eval = certificate.cross_check(own, {"other": [("data:poi=1", 11.9)]}, 1e-3, 1e-5)
    assert stiff_eval["ok"]
    assert stiff_eval["decisive"] is False


def test_rounding_estimate_sees_stiff_constraints():
    assert certificate.data_rounding(np.array([52.0, 41.0, 1.0])) < 1e-12
    tau = (435 / 0.001) ** 2
    assert certificate.data_rounding(np.array([512.0, tau])) > certificate.NLL_TOL


def test_pyhf_results_carry_a_certificate():
    bkg, patches = pinned_at_bound()
    result = PyhfEngine().run_one(FitTask(workspace=bkg, patches=tuple(patches)), 0)
    assert result.status == "converged"
    cert = result.certificate
    assert cert["ok"]
    assert cert["n_fits"] == 5
    assert {f["fit"] for f in cert["fits"]} == {
        "data:free",
        "data:poi=1",
        "data:poi=0",
        "asimov:free",
        "asimov:poi=1",
    }
    assert cert["worst"]["kkt"] <= certificate.GRAD_TOL
    assert cert["worst"]["min_eigenvalue"] > 0
    assert cert["precision"]["ok"]
    assert cert["ordering"]["ok"]


def test_pyhf_tight_tolerance_cls_one_on_a_vanishing_signal_is_not_certified():
    # pyhf with tolerance 1e-8 reports CLs = 1.0 and success; the truth is 0.99910
    bkg, patches = tiny_signal()
    task = FitTask(workspace=bkg, patches=tuple(patches), settings=FitSettings(tolerance=1e-8))
    result = PyhfEngine().run_one(task, 0)
    assert result.status == "not_converged"
    assert result.values == {}
    assert result.diagnostics["uncertified_values"]["cls_obs"] == [pytest.approx(1.0)]
    assert "sqrt(q)" in result.diagnostics["reason"]


def test_pyhf_stuck_on_a_stiff_constraint_is_not_certified():
    # tau = 1.9e11: pyhf stops at its starting point; the certificate says where and why,
    # and that 2 NLL differences cannot be compared to 1e-8 with pyhf's evaluation here
    bkg, patches = stiff()
    task = FitTask(workspace=bkg, patches=tuple(patches), settings=FitSettings(tolerance=1e-8))
    result = PyhfEngine().run_one(task, 1)
    assert result.status == "not_converged"
    assert result.values == {}
    assert not result.certificate["ok"]
    assert "projected gradient" in result.certificate["why"]
    assert result.certificate["worst"]["kkt"] > 100 * certificate.GRAD_TOL
    assert result.certificate["rounding"] > certificate.NLL_TOL


def test_batched_results_are_certified_from_their_diagnostics():
    bkg, patches = pinned_at_bound()
    task = FitTask(workspace=bkg, patches=tuple(patches))
    (good,) = BatchedEngine(num_threads=1).run(task)
    good = certify_batched_result(good, task)
    assert good.status == "converged"
    assert good.certificate["ok"]
    assert good.certificate["n_fits"] == 5
    assert not needs_ladder(good)
    short = replace(task, settings=FitSettings(maxiter=1))
    (stopped,) = BatchedEngine(num_threads=1).run(short)
    stopped = certify_batched_result(stopped, short)
    assert stopped.status == "not_converged"
    assert not stopped.certificate["ok"]
    assert needs_ladder(stopped)
