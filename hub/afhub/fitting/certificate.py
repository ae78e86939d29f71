"""Certificates: a check anyone can repeat that a reported minimum is a minimum.

Every engine's result is ``converged`` only with a certificate (``PatchResult.certificate``).
All numbers are in units of ``2 * NLL`` (pyhf's ``twice_nll``) and refer to the fits that
decide CLs (for ``hypotest``/``upper_limit`` the free and fixed-POI fits to the observed and
the Asimov data and the fit that generates the Asimov data; for ``fit`` the free fit):

``kkt``
    the largest component of the *projected* gradient at the reported minimum: components
    of fixed parameters and of parameters at a bound whose gradient points out of the
    bounds are dropped (the Karush-Kuhn-Tucker conditions); it must be at most
    :data:`GRAD_TOL`, and the point must lie within the bounds.
``min_eigenvalue``
    the smallest eigenvalue of the Hessian reduced to the free parameters not at a bound;
    it must be positive (:data:`PD_RTOL` relative to the largest): a minimum, not a saddle.
``newton_decrement``
    ``g^T H^-1 g`` on the same reduced set: how far above the minimum the point is expected
    to be (half of it); at most :data:`DECREMENT_TOL`.
``ordering``
    within one method, the free fit to a data set is a minimum over a set that contains the
    fixed-POI fits' points, so its ``2 NLL`` must not exceed theirs by more than what the
    decrement threshold admits (:data:`DECREMENT_TOL`, plus the evaluation's accuracy).
``cross_check``
    against the other methods that fitted the same patch (the ladder's other rungs and the
    batched engine): the ``2 NLL`` of each fit to the observed data at the reported minimum
    is no higher than at the other methods' minima of the same fit (by more than the
    ladder's ``GAP_TOL``: the decrement threshold plus :data:`NLL_TOL`), where the evaluation
    is accurate to :data:`NLL_TOL` (``rounding`` below); otherwise the comparison is recorded
    as not decisive.

``precision``
    each test statistic ``q`` is a difference of two fits' ``2 NLL``; their decrements bound
    its error, and the error of ``sqrt(q)`` (what CLs depends on) must be at most
    :data:`SQRT_Q_TOL`. A vanishing signal (``q`` near ``1e-6``) needs fits far tighter than
    a large one.

``rounding`` estimates the float64 rounding of one ``2 NLL`` evaluation (from the sizes of the
observed and auxiliary data: a stiff Poisson constraint with ``tau = 1e11`` carries terms near
``1e12`` whose rounding is about ``1e-4``); comparisons of ``2 NLL`` values are decisive only
where it is below :data:`NLL_TOL`.

The module is pure numpy; :class:`PyhfEvaluator` evaluates pyhf's own ``twice_nll``, its
gradient and Hessian (torch autograd where torch is installed, finite differences otherwise).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

#: largest projected-gradient component of 2 NLL accepted at a minimum
GRAD_TOL = 5e-2
#: largest Newton decrement g^T H^-1 g of 2 NLL accepted (the point is about half of it above
#: the minimum)
DECREMENT_TOL = 1e-5
#: largest error of sqrt(q) (q: a test statistic, a 2 NLL difference of a fixed-POI and the
#: free fit) that the fits' Newton decrements allow: CLs moves by at most about
#: ``0.4 * SQRT_Q_TOL / CLb``. Vanishing signals have tiny q and need tight fits.
SQRT_Q_TOL = 1e-4
#: smallest eigenvalue of the reduced Hessian relative to the largest (positive definite)
PD_RTOL = 1e-12
#: accuracy of NLL differences a cross-method comparison needs (2 NLL units)
NLL_TOL = 1e-8
#: float64 unit round-off
EPS = float(np.finfo(float).eps)

#: how many per-fit entries a certificate lists (an upper-limit scan runs hundreds of fits)
MAX_FITS = 24

THRESHOLDS = {
    "grad_tol": GRAD_TOL,
    "decrement_tol": DECREMENT_TOL,
    "pd_rtol": PD_RTOL,
    "sqrt_q_tol": SQRT_Q_TOL,
    "nll_tol": NLL_TOL,
    "units": "2*NLL",
}


class Evaluator(Protocol):
    """What a certificate needs: ``2 NLL``, its gradient and Hessian at a point."""

    #: estimated absolute float64 rounding of one ``twice_nll`` value
    rounding: float

    def twice_nll(self, x: np.ndarray, data: np.ndarray) -> float: ...

    def grad_hess(self, x: np.ndarray, data: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """``(2 NLL, gradient, Hessian)`` at ``x``."""
        ...


@dataclass(frozen=True)
class FitPoint:
    """One minimisation as an optimizer reported it (pyhf's parameter order)."""

    #: ``data`` or ``asimov``; ``free`` or the fixed POI value
    dataset: str
    poi: float | None
    x: np.ndarray
    data: np.ndarray
    fixed: np.ndarray  # bool
    lower: np.ndarray
    upper: np.ndarray

    @property
    def label(self) -> str:
        which = "free" if self.poi is None else f"poi={self.poi:g}"
        return f"{self.dataset}:{which}"


def certify_point(
    x: np.ndarray,
    grad: np.ndarray,
    hess: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    fixed: np.ndarray,
) -> dict[str, Any]:
    """The KKT/Hessian part of a certificate at one point (2 NLL units)."""
    x, g = np.asarray(x, float), np.asarray(grad, float)
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    fixed = np.asarray(fixed, bool)
    eps = 1e-8 * (1 + np.maximum(np.abs(lo), np.abs(hi)))
    in_bounds = bool(np.all((x >= lo - eps) & (x <= hi + eps)))
    at_lo = ~fixed & (x <= lo + eps) & (g > 0)
    at_hi = ~fixed & (x >= hi - eps) & (g < 0)
    work = ~fixed & ~at_lo & ~at_hi
    gw = g[work]
    hw = np.asarray(hess, float)[np.ix_(work, work)]
    finite = bool(np.all(np.isfinite(gw)) and np.all(np.isfinite(hw)))
    grad_max = float(np.max(np.abs(gw), initial=0.0)) if finite else math.inf
    if finite and hw.size:
        eig = np.linalg.eigvalsh(0.5 * (hw + hw.T))
        min_eig, max_eig = float(eig[0]), float(eig[-1])
        pd = min_eig > PD_RTOL * max(1.0, abs(max_eig))
        decrement = float(gw @ np.linalg.solve(hw, gw)) if pd else math.inf
    else:
        min_eig, max_eig = (math.inf, math.inf) if finite else (math.nan, math.nan)
        pd, decrement = finite, 0.0 if finite else math.inf
    ok = in_bounds and finite and pd and grad_max <= GRAD_TOL and decrement <= DECREMENT_TOL
    out = {
        "ok": bool(ok),
        "kkt": grad_max,
        "min_eigenvalue": min_eig,
        "max_eigenvalue": max_eig,
        "newton_decrement": decrement,
        "in_bounds": in_bounds,
        "n_free": int(work.sum()),
        "at_bounds": [int(i) for i in np.flatnonzero(at_lo | at_hi)],
    }
    if not ok:
        out["why"] = _why(in_bounds, finite, pd, grad_max, decrement)
    return out


def _why(in_bounds: bool, finite: bool, pd: bool, grad_max: float, decrement: float) -> str:
    if not finite:
        return "non-finite gradient or Hessian"
    if not in_bounds:
        return "the point lies outside the parameter bounds"
    if not pd:
        return "the reduced Hessian is not positive definite (not a minimum)"
    if grad_max > GRAD_TOL:
        return f"projected gradient {grad_max:.3g} above {GRAD_TOL:g} (not at a minimum)"
    return f"Newton decrement {decrement:.3g} above {DECREMENT_TOL:g} (not at a minimum)"


def _inf(value: float | None) -> float:
    return math.inf if value is None else value


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def certify_points(
    evaluator: Evaluator, points: Sequence[FitPoint], pois: Sequence[float] | None = None
) -> dict[str, Any]:
    """Certificate of one method's fits of a patch: every point's KKT/Hessian check and the
    free-below-fixed ordering per data set."""
    session = getattr(evaluator, "session", None)
    with session() if session is not None else contextlib.nullcontext():
        fits = _certify_each(evaluator, points)
    ordering = _ordering(points, fits, evaluator.rounding)
    prec = precision(fits, pois)
    failed = [f for f in fits if not f["ok"]]
    ok = bool(fits) and not failed and ordering["ok"] and prec["ok"]
    cert: dict[str, Any] = {
        "ok": ok,
        "evaluator": getattr(evaluator, "name", type(evaluator).__name__),
        "rounding": evaluator.rounding,
        "thresholds": dict(THRESHOLDS),
        "n_fits": len(fits),
        "worst": _worst(fits),
        "ordering": ordering,
        "precision": prec,
        "fits": fits[:MAX_FITS],
    }
    if not fits:
        cert["why"] = "no fit to certify"
    elif failed:
        cert["why"] = f"fit {failed[0]['fit']}: {failed[0]['why']}"
    elif not ordering["ok"]:
        cert["why"] = ordering["why"]
    elif not prec["ok"]:
        cert["why"] = prec["why"]
    return cert


def _certify_each(evaluator: Evaluator, points: Sequence[FitPoint]) -> list[dict[str, Any]]:
    fits: list[dict[str, Any]] = []
    seen: dict[tuple, dict[str, Any]] = {}
    for p in points:
        key = (p.label, p.x.tobytes(), p.data.tobytes())
        if key not in seen:
            f, g, h = evaluator.grad_hess(p.x, p.data)
            rec = certify_point(p.x, g, h, p.lower, p.upper, p.fixed)
            rec["twice_nll"] = _finite(f)
            seen[key] = rec
        fits.append({"fit": p.label, **seen[key]})
    return fits


def precision(
    fits: Sequence[dict[str, Any]], pois: Sequence[float] | None = None
) -> dict[str, Any]:
    """How precisely the fits determine each test statistic ``q`` (fixed-POI fit minus the
    free fit of the same data set, 2 NLL): each fit is at most half its Newton decrement
    above its minimum, so ``q`` is within ``e = (dec_fixed + dec_free) / 2`` and ``sqrt(q)``
    within ``sqrt(q + e) - sqrt(q)``; that must be at most :data:`SQRT_Q_TOL`. ``pois``: the
    tested POI values (the fit that generates the Asimov data, at 0, is no test statistic
    unless 0 is tested); ``None``: every fixed-POI fit."""
    tested = None if pois is None else {f"poi={float(v):g}" for v in pois}
    free: dict[str, dict[str, Any]] = {}
    for f in fits:
        dataset, _, which = f["fit"].partition(":")
        if which == "free" and f.get("twice_nll") is not None:
            free.setdefault(dataset, f)
    worst: dict[str, Any] | None = None
    for f in fits:
        dataset, _, which = f["fit"].partition(":")
        if which == "free" or dataset not in free or f.get("twice_nll") is None:
            continue
        if tested is not None and which not in tested:
            continue
        g = free[dataset]
        dec = (f.get("newton_decrement") or 0.0) + (g.get("newton_decrement") or 0.0)
        if not math.isfinite(dec):
            continue  # the fit itself fails its certificate
        q = max(f["twice_nll"] - g["twice_nll"], 0.0)
        err = math.sqrt(q + dec / 2) - math.sqrt(q)
        if worst is None or err > worst["sqrt_q_error"]:
            worst = {"fit": f["fit"], "q": q, "q_error": dec / 2, "sqrt_q_error": err}
    if worst is None:
        return {"ok": True}
    out = {"ok": worst["sqrt_q_error"] <= SQRT_Q_TOL, **worst}
    if not out["ok"]:
        out["why"] = (
            f"q of {worst['fit']} is {worst['q']:.3g} but the fits determine it only to "
            f"{worst['q_error']:.3g} (sqrt(q) to {worst['sqrt_q_error']:.3g} > {SQRT_Q_TOL:g})"
        )
    return out


def _worst(fits: list[dict[str, Any]]) -> dict[str, Any]:
    if not fits:
        return {}
    return {
        "kkt": max(f["kkt"] for f in fits),
        "min_eigenvalue": min(f["min_eigenvalue"] for f in fits),
        "newton_decrement": max(f["newton_decrement"] for f in fits),
    }


def _ordering(
    points: Sequence[FitPoint], fits: list[dict[str, Any]], rounding: float
) -> dict[str, Any]:
    """Free fit of a data set no higher than any fixed-POI fit of the same data set."""
    tol = max(DECREMENT_TOL + NLL_TOL, 10 * rounding)
    worst = -math.inf
    for p, f in zip(points, fits, strict=True):
        if p.poi is not None or f["twice_nll"] is None:
            continue
        for q, h in zip(points, fits, strict=True):
            if q.poi is None or h["twice_nll"] is None or not np.array_equal(p.data, q.data):
                continue
            excess = f["twice_nll"] - h["twice_nll"]
            worst = max(worst, excess)
            if excess > tol:
                return {
                    "ok": False,
                    "excess": excess,
                    "tolerance": tol,
                    "why": f"the free fit {p.label} is {excess:.3g} above the fixed fit "
                    f"{q.label} in 2 NLL (a feasible point with lower NLL: not a minimum)",
                }
    return {"ok": True, "excess": None if worst == -math.inf else worst, "tolerance": tol}


def cross_check(
    own: Iterable[tuple[str, float | None]],
    others: Mapping[str, Iterable[tuple[str, float | None]]],
    rounding: float,
    gap_tol: float = NLL_TOL,
) -> dict[str, Any]:
    """Compare the ``2 NLL`` at this method's minima with other methods' minima of the same
    fits to the observed data (``(label, 2 NLL)`` pairs, same function). Decisive only where
    ``rounding`` is below :data:`NLL_TOL`; ``ok`` is False when another method found a
    minimum lower by more than ``gap_tol``."""
    mine = {label: v for label, v in own if v is not None and label.startswith("data:")}
    out: dict[str, Any] = {"ok": True, "decisive": rounding <= NLL_TOL, "tolerance": gap_tol}
    lowest: dict[str, Any] = {}
    for method, fits in others.items():
        for label, v in fits:
            if v is None or label not in mine:
                continue
            gap = mine[label] - v
            if label not in lowest or gap > lowest[label]["gap"]:
                lowest[label] = {"method": method, "gap": gap}
    out["compared"] = len(lowest)
    if lowest:
        label, worst = max(lowest.items(), key=lambda kv: kv[1]["gap"])
        out["largest_gap"] = {"fit": label, **worst}
        if out["decisive"] and worst["gap"] > gap_tol:
            out["ok"] = False
            out["why"] = (
                f"{worst['method']} found a minimum of {label} lower by {worst['gap']:.3g} in 2 NLL"
            )
    return out


def data_rounding(data: np.ndarray) -> float:
    """Estimated float64 rounding of one ``2 NLL`` of these (main + auxiliary) data: each
    Poisson term ``n ln(nu) - nu`` is of size ``n (1 + |ln n|)``."""
    n = np.abs(np.asarray(data, float))
    return float(4 * EPS * np.sum(n * (1.0 + np.abs(np.log(np.maximum(n, 1.0))))))


# ---------------------------------------------------------------------------- pyhf


class PyhfEvaluator:
    """pyhf's own ``twice_nll`` of a model, with gradient and Hessian.

    ``spec`` is the (patched) workspace; the model is built on pyhf's pytorch backend when
    torch is installed (autograd gradient and Hessian), else on numpy (central finite
    differences; for small models only).
    """

    name = "pyhf twice_nll"

    def __init__(self, spec: dict[str, Any], measurement: str | None, modifier_settings: dict):
        import importlib.util

        import pyhf

        self._torch = importlib.util.find_spec("torch") is not None
        previous = pyhf.get_backend()
        try:
            pyhf.set_backend("pytorch" if self._torch else "numpy")
            workspace = pyhf.Workspace(spec)
            self.model = workspace.model(
                measurement_name=measurement, modifier_settings=modifier_settings
            )
            data = np.asarray(workspace.data(self.model), dtype=float)
        finally:
            pyhf.set_backend(*previous)
        self.name = "pyhf twice_nll (" + ("torch autograd" if self._torch else "numpy FD") + ")"
        self.observed = data
        self.rounding = data_rounding(data)

    def _f(self, x: Any, data: Any) -> Any:
        import pyhf

        return pyhf.infer.mle.twice_nll(x, data, self.model)[0]

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """pyhf's backend set once for many evaluations (switching it re-builds models)."""
        import pyhf

        previous = pyhf.get_backend()
        pyhf.set_backend("pytorch" if self._torch else "numpy")
        try:
            yield
        finally:
            pyhf.set_backend(*previous)

    def twice_nll(self, x: np.ndarray, data: np.ndarray) -> float:
        with self.session():
            return float(np.asarray(self._f(np.asarray(x, float), np.asarray(data, float))))

    def grad_hess(self, x: np.ndarray, data: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """Autograd gradient; Hessian by autograd, or, where pyhf's formulas give NaN second
        derivatives (``where`` branches), by central differences of the autograd gradient."""
        if not self._torch:
            return _fd_grad_hess(lambda p: float(self._f(p, data)), np.asarray(x, float))
        import torch

        dt = torch.as_tensor(np.asarray(data, float), dtype=torch.float64)

        def grad(p: np.ndarray) -> tuple[float, np.ndarray]:
            xt = torch.tensor(p, dtype=torch.float64, requires_grad=True)
            with torch.enable_grad():
                f = self._f(xt, dt)
                (g,) = torch.autograd.grad(f, xt)
            return float(f.detach()), g.numpy().astype(float)

        x = np.asarray(x, float)
        f0, g0 = grad(x)
        h = torch.autograd.functional.hessian(
            lambda p: self._f(p, dt), torch.tensor(x, dtype=torch.float64), vectorize=True
        ).numpy()
        if not np.all(np.isfinite(h)):
            steps = 1e-5 * np.maximum(1.0, np.abs(x))
            h = np.zeros((len(x), len(x)))
            for i in range(len(x)):
                e = np.zeros(len(x))
                e[i] = steps[i]
                h[:, i] = (grad(x + e)[1] - grad(x - e)[1]) / (2 * steps[i])
            h = 0.5 * (h + h.T)
        return f0, g0, h


def _fd_grad_hess(
    f: Any, x: np.ndarray, hessian: bool = True
) -> tuple[float, np.ndarray, np.ndarray]:
    n = len(x)
    h = 1e-5 * np.maximum(1.0, np.abs(x))
    f0 = f(x)
    grad = np.zeros(n)
    for i in range(n):
        e = np.zeros(n)
        e[i] = h[i]
        grad[i] = (f(x + e) - f(x - e)) / (2 * h[i])
    hess = np.zeros((n, n))
    if hessian:
        for i in range(n):
            e = np.zeros(n)
            e[i] = h[i]
            for j in range(i + 1):
                d = np.zeros(n)
                d[j] = h[j]
                hess[i, j] = hess[j, i] = (
                    f(x + e + d) - f(x + e - d) - f(x - e + d) + f(x - e - d)
                ) / (4 * h[i] * h[j])
    return f0, grad, hess


# ---------------------------------------------------------------------------- batched


def certify_batched(
    diagnostics: dict[str, Any], pois: Sequence[float] | None = None
) -> dict[str, Any]:
    """Certificate of a batched-engine result from the per-fit diagnostics it reports.

    The batched engine declares a fit converged only where its working-set Hessian (free
    parameters not held at a bound) is positive definite without damping (a Cholesky
    factorisation) and its Newton decrement is below its tolerance; ``grad_norm`` is its
    largest projected-gradient component of the NLL. Converted to 2 NLL units here.
    """
    fits: list[dict[str, Any]] = []
    for label, d in _batched_fits(diagnostics.get("fits") or {}, pois):
        kkt = 2 * float(d.get("grad_norm", math.nan))
        dec = 2 * float(d.get("newton_decrement", math.nan))
        success = bool(d.get("success"))
        ok = success and kkt <= GRAD_TOL and dec <= DECREMENT_TOL
        rec = {
            "fit": label,
            "ok": ok,
            "kkt": _finite(kkt),
            "newton_decrement": _finite(dec),
            "positive_definite": success,
            "twice_nll": _finite(float(d.get("twice_nll", math.nan))),
        }
        if not ok:
            rec["why"] = (
                "the engine did not converge"
                if not success
                else _why(True, math.isfinite(kkt + dec), True, kkt, dec)
            )
        fits.append(rec)
    failed = [f for f in fits if not f["ok"]]
    prec = precision(fits, pois)
    cert: dict[str, Any] = {
        "ok": bool(fits) and not failed and prec["ok"],
        "precision": prec,
        "evaluator": "batched engine (analytic gradient and Hessian)",
        "thresholds": dict(THRESHOLDS),
        "n_fits": len(fits),
        "worst": {
            "kkt": max((_inf(f["kkt"]) for f in fits), default=None),
            "newton_decrement": max((_inf(f["newton_decrement"]) for f in fits), default=None),
        },
        "fits": fits[:MAX_FITS],
    }
    if failed:
        cert["why"] = f"fit {failed[0]['fit']}: {failed[0]['why']}"
    elif not fits:
        cert["why"] = "no fit diagnostics"
    elif not prec["ok"]:
        cert["why"] = prec["why"]
    return cert


def batched_labels(
    diagnostics: dict[str, Any], pois: Sequence[float] | None = None
) -> list[tuple[str, float | None]]:
    """``(label, 2 NLL)`` of a batched result's fits, labelled as :class:`FitPoint` is."""
    return [
        (label, d.get("twice_nll")) for label, d in _batched_fits(diagnostics.get("fits"), pois)
    ]


def _batched_fits(fits: Any, pois: Sequence[float] | None = None) -> list[tuple[str, dict]]:
    out: list[tuple[str, dict]] = []
    if not isinstance(fits, dict):
        return out
    names = {
        "free_data": "data:free",
        "asimov_generation": "data:poi=0",
        "free_asimov": "asimov:free",
    }
    for key, value in fits.items():
        if key in names and isinstance(value, dict):
            out.append((names[key], value))
        elif key in ("fixed_poi_data", "fixed_poi_asimov") and isinstance(value, list):
            which = "data" if key == "fixed_poi_data" else "asimov"
            for k, d in enumerate(value):
                poi = f"poi={pois[k]:g}" if pois is not None else f"poi#{k}"
                out.append((f"{which}:{poi}", d))
    return out
