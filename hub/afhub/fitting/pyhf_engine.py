"""The reference engine: each patch fitted with pyhf itself, one model at a time.

Every minimisation pyhf runs (the several fits inside one ``hypotest`` included) goes through
a recording optimizer, so that convergence is judged on all of them: a fit that failed
(``success`` false), stopped at its initial point with a non-zero gradient (pyhf's default
SLSQP does this silently on some published likelihoods), or left a non-finite number is
reported ``not_converged`` with the optimizer's diagnostics and no values.
"""

from __future__ import annotations

import math
import platform
import re
import time
from typing import Any

import numpy as np
import pyhf
import scipy
from pyhf.optimize.mixins import OptimizerMixin

from afhub.fitting.certificate import FitPoint, PyhfEvaluator, certify_points
from afhub.fitting.jsonpatch import UNBOUNDED, apply_patch
from afhub.fitting.types import FitSettings, FitTask, PatchResult, all_finite

#: a fit that stops after at most this many iterations is suspect ...
STALL_MAX_NIT = 1
#: ... when the largest free gradient component of twice the NLL still exceeds this
STALL_GRAD_TOL = 0.1
#: how many per-fit records a result keeps (an upper-limit scan runs hundreds of fits)
MAX_FIT_RECORDS = 50

_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\\/][^\s\\/'\"]+){2,}")


def safe_message(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` of an exception with file-system paths removed, truncated."""
    text = _PATH.sub("<path>", f"{type(exc).__name__}: {exc}").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _record(result: Any, bounds: Any, fixed_vals: Any) -> dict[str, Any]:
    """Diagnostics of one minimisation, with the largest free (projected) gradient."""
    rec: dict[str, Any] = {
        "success": bool(getattr(result, "success", False)),
        "nit": int(result.nit) if getattr(result, "nit", None) is not None else None,
        "nfev": int(result.nfev) if getattr(result, "nfev", None) is not None else None,
        "fun": float(np.asarray(result.fun, dtype=float).ravel()[0]),
        "message": str(getattr(result, "message", "")),
        "grad_max": None,
    }
    jac = getattr(result, "jac", None)
    if jac is not None and bounds is not None:
        grad = np.array(jac, dtype=float).ravel()
        x = np.asarray(result.x, dtype=float).ravel()
        if grad.shape == x.shape == (len(bounds),):
            low = np.array([b[0] for b in bounds], dtype=float)
            high = np.array([b[1] for b in bounds], dtype=float)
            free = np.ones_like(grad, dtype=bool)
            free[[i for i, _ in fixed_vals or []]] = False
            free &= ~((x <= low + 1e-8) & (grad > 0))
            free &= ~((x >= high - 1e-8) & (grad < 0))
            rec["grad_max"] = float(np.max(np.abs(grad[free]), initial=0.0))
    return rec


def stalled(rec: dict[str, Any]) -> bool:
    """True when a fit stopped at (about) its initial point with a non-zero gradient."""
    nit, grad = rec.get("nit"), rec.get("grad_max")
    return nit is not None and nit <= STALL_MAX_NIT and (grad is None or grad > STALL_GRAD_TOL)


class _PointCapture(OptimizerMixin):
    """Keeps, for every minimisation, what a certificate needs: the data fitted, the fixed
    parameters, the bounds and the reported minimum (pyhf's parameter order). Mixed in
    before one of pyhf's optimizers (all of them are OptimizerMixins)."""

    points: list[dict[str, Any]]
    _current: dict[str, Any] | None = None

    def minimize(self, objective, data, pdf, init_pars, par_bounds, fixed_vals=None, **kwargs):
        self._current = {
            "data": np.asarray(pyhf.tensorlib.tolist(data), dtype=float),
            "bounds": np.asarray(par_bounds, dtype=float),
            "fixed": [(int(i), float(v)) for i, v in (fixed_vals or [])],
        }
        return super().minimize(objective, data, pdf, init_pars, par_bounds, fixed_vals, **kwargs)

    def _internal_postprocess(self, fitresult, stitch_pars, return_uncertainties=False):
        result = super()._internal_postprocess(
            fitresult, stitch_pars, return_uncertainties=return_uncertainties
        )
        current = getattr(self, "_current", None)
        if current is not None:
            x = np.asarray(pyhf.tensorlib.tolist(result.x), dtype=float).ravel()
            self.points.append({**current, "x": x})
            self._current = None
        return result


class RecordingScipyOptimizer(_PointCapture, pyhf.optimize.scipy_optimizer):
    """pyhf's SciPy optimizer that keeps the diagnostics of every minimisation."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.records: list[dict[str, Any]] = []
        self.points = []

    def _minimize(
        self, minimizer, func, x0, do_grad=False, bounds=None, fixed_vals=None, options=None
    ):
        result = super()._minimize(
            minimizer,
            func,
            x0,
            do_grad=do_grad,
            bounds=bounds,
            fixed_vals=fixed_vals,
            options=options if options is not None else {},
        )
        self.records.append(_record(result, bounds, fixed_vals))
        return result


def make_optimizer(settings: FitSettings) -> Any:
    """A recording optimizer for ``settings`` (``records`` lists every fit's diagnostics)."""
    if settings.optimizer == "scipy":
        return RecordingScipyOptimizer(tolerance=settings.tolerance, maxiter=settings.maxiter)
    if settings.optimizer == "minuit":
        base = pyhf.optimize.minuit_optimizer

        class RecordingMinuit(_PointCapture, base):  # type: ignore[misc, valid-type]
            def _minimize(self, minimizer, func, x0, **kwargs):
                result = super()._minimize(minimizer, func, x0, **kwargs)
                self.records.append(_record(result, None, None))
                return result

        opt = RecordingMinuit(tolerance=settings.tolerance or 0.1, maxiter=settings.maxiter)
        opt.records = []
        opt.points = []
        return opt
    raise ValueError(f"unknown optimizer {settings.optimizer!r}")


def _backend_version(backend: str) -> str:
    if backend == "pytorch":
        import torch

        return torch.__version__
    return np.__version__


def _floats(values: Any) -> list[float]:
    return [float(v) for v in values]


class PyhfEngine:
    """Fit each patch with pyhf, one model at a time (the reference for every other engine)."""

    name = "pyhf"

    def __init__(self, certify: bool = True) -> None:
        #: judge every result with a certificate (``afhub.fitting.certificate``); off only
        #: for timing pyhf itself
        self.certify = certify

    def run(self, task: FitTask) -> list[PatchResult]:
        """One result per patch (or one for the bare workspace when there are no patches)."""
        return [self.run_one(task, i) for i in range(max(1, len(task.patches)))]

    def run_one(self, task: FitTask, patch_index: int) -> PatchResult:
        """Fit one patch (index into ``task.patches``; 0 for a task without patches)."""
        if not 0 <= patch_index < max(1, len(task.patches)):
            raise IndexError(f"patch index {patch_index} out of range")
        patch = task.patches[patch_index] if task.patches else None
        settings = task.settings
        result = PatchResult(
            patch=patch["name"] if patch else None,
            engine=self.name,
            status="failed",
            provenance=self._provenance(task, patch),
        )
        t0 = time.perf_counter()
        optimizer = make_optimizer(settings)
        previous = pyhf.get_backend()
        try:
            pyhf.set_backend(settings.backend, optimizer)
            spec = (
                apply_patch(task.workspace, patch["patch"], UNBOUNDED) if patch else task.workspace
            )
            workspace = pyhf.Workspace(spec)
            model = workspace.model(
                measurement_name=task.measurement,
                modifier_settings={
                    "normsys": {"interpcode": settings.normsys_interpcode},
                    "histosys": {"interpcode": settings.histosys_interpcode},
                },
            )
            data = workspace.data(model)
            t1 = time.perf_counter()
            result.timings["build"] = t1 - t0
            values = self._operation(task.operation, data, model, settings, result)
            t2 = time.perf_counter()
            result.timings["compute"] = t2 - t1
            self._judge(result, values, optimizer.records)
            if self.certify:
                self._certify(result, task, spec, model, optimizer.points)
                result.timings["certificate"] = time.perf_counter() - t2
        except pyhf.exceptions.FailedMinimization as exc:
            result.timings.setdefault("compute", time.perf_counter() - t0)
            fit = getattr(exc, "result", None)
            result.status = "not_converged"
            result.diagnostics = {
                "reason": "the optimizer reported failure: "
                + str(getattr(fit, "message", "unknown")),
                **self._fit_summary(optimizer.records),
            }
        except FloatingPointError as exc:
            result.status = "not_converged"
            result.diagnostics = {"reason": str(exc), **self._fit_summary(optimizer.records)}
        except Exception as exc:  # noqa: BLE001 - any other failure is this patch's result
            result.status = "failed"
            result.diagnostics = {
                "reason": safe_message(exc),
                **self._fit_summary(optimizer.records),
            }
        finally:
            pyhf.set_backend(*previous)
        result.timings["total"] = time.perf_counter() - t0
        return result

    # ------------------------------------------------------------------ operations

    def _operation(
        self, operation: str, data: Any, model: Any, settings: FitSettings, result: PatchResult
    ) -> dict[str, Any]:
        kwargs = {"test_stat": settings.test_stat, "calctype": settings.calctype}
        if operation == "hypotest":
            cls_obs, cls_exp = [], []
            for mu in settings.poi_values:
                obs, exp = pyhf.infer.hypotest(mu, data, model, return_expected_set=True, **kwargs)
                cls_obs.append(float(obs))
                cls_exp.append(_floats(exp))
            return {"poi_values": list(settings.poi_values), "cls_obs": cls_obs, "cls_exp": cls_exp}
        if operation == "upper_limit":
            low, high, points = settings.scan
            scan = np.linspace(low, high, points)
            obs_limit, exp_limits, (_, scan_results) = (
                pyhf.infer.intervals.upper_limits.upper_limit(
                    data, model, scan=scan, level=settings.level, return_results=True, **kwargs
                )
            )
            values: dict[str, Any] = {
                "obs_limit": float(obs_limit),
                "exp_limits": _floats(exp_limits),
                "poi_values": _floats(scan),
                "cls_obs": [float(r[0]) for r in scan_results],
                "cls_exp": [_floats(r[1]) for r in scan_results],
            }
            edges = [
                lim for lim in [values["obs_limit"], *values["exp_limits"]] if lim in (low, high)
            ]
            if edges:
                result.diagnostics["warnings"] = [
                    "a limit lies at the edge of the scan: CLs does not cross the level inside "
                    "it; widen settings.scan"
                ]
            return values
        if operation == "fit":
            return self._fit(data, model, result)
        raise ValueError(f"unknown operation {operation!r}")

    def _fit(self, data: Any, model: Any, result: PatchResult) -> dict[str, Any]:
        tensorlib, _ = pyhf.get_backend()
        pars, twice_nll, _ = pyhf.infer.mle.fit(
            data, model, return_uncertainties=True, return_fitted_val=True, return_result_obj=True
        )
        pars = np.asarray(tensorlib.tolist(pars), dtype=float)
        if pars.ndim == 2:
            best, unc, method = pars[:, 0], pars[:, 1], "optimizer"
        else:
            best = pars
            unc, method = hessian_uncertainties(model, data, best)
        result.diagnostics["uncertainty_method"] = method
        names, values, errors = model.config.par_order, {}, {}
        for name in names:
            sl = model.config.par_slice(name)
            values[name] = _floats(best[sl])
            errors[name] = _floats(unc[sl])
        return {
            "parameters": values,
            "uncertainties": errors,
            "twice_nll": float(np.asarray(tensorlib.tolist(twice_nll), dtype=float).ravel()[0]),
        }

    # ------------------------------------------------------------------ judging

    @staticmethod
    def _fit_summary(records: list[dict[str, Any]]) -> dict[str, Any]:
        return {"n_fits": len(records), "fits": records[:MAX_FIT_RECORDS]}

    def _judge(
        self, result: PatchResult, values: dict[str, Any], records: list[dict[str, Any]]
    ) -> None:
        summary = self._fit_summary(records)
        bad = [r for r in records if not r["success"] or stalled(r) or not math.isfinite(r["fun"])]
        if bad:
            result.status = "not_converged"
            reason = (
                "a fit stopped at its initial point with a non-zero gradient "
                f"(nit={bad[0]['nit']}, largest free gradient {bad[0]['grad_max']})"
                if stalled(bad[0])
                else f"a fit did not converge: {bad[0]['message']}"
            )
            result.diagnostics.update({"reason": reason, "failed_fits": bad[:10], **summary})
            return
        if not all_finite(values):
            result.status = "not_converged"
            result.diagnostics.update({"reason": "the result has non-finite numbers", **summary})
            return
        result.status = "converged"
        result.values = values
        result.diagnostics.update(summary)

    def _certify(
        self,
        result: PatchResult,
        task: FitTask,
        spec: dict[str, Any],
        model: Any,
        captured: list[dict[str, Any]],
    ) -> None:
        """Attach the certificate; a result without a passing one is not ``converged``."""
        settings = task.settings
        evaluator = PyhfEvaluator(
            spec,
            task.measurement,
            {
                "normsys": {"interpcode": settings.normsys_interpcode},
                "histosys": {"interpcode": settings.histosys_interpcode},
            },
        )
        points = fit_points(model, evaluator.observed, captured)
        pois = tested_pois(task)
        poi = model.config.poi_index
        if pois is not None and poi is not None:
            # at the POI's lower bound q is 0 by definition (q = 0 where mu_hat > mu): no
            # precision to ask of it
            low = float(model.config.suggested_bounds()[poi][0])
            pois = [v for v in pois if v > low]
        result.certificate = certify_points(evaluator, points, pois)
        if result.status == "converged" and not result.certificate["ok"]:
            result.status = "not_converged"
            result.diagnostics["reason"] = "no certificate: " + result.certificate["why"]
            result.diagnostics["uncertified_values"] = result.values
            result.values = {}

    @staticmethod
    def _provenance(task: FitTask, patch: dict[str, Any] | None) -> dict[str, Any]:
        settings = task.settings
        return {
            "pyhf": pyhf.__version__,
            "backend": settings.backend,
            "backend_version": _backend_version(settings.backend),
            "optimizer": settings.optimizer,
            "scipy": scipy.__version__,
            "python": platform.python_version(),
            "workspace_sha256": task.workspace_sha256,
            "settings": settings.to_dict(),
            "operation": task.operation,
            "measurement": task.measurement,
            "patch": patch["name"] if patch else None,
            "engine": PyhfEngine.name,
            "device": "cpu",
        }


def hessian_uncertainties(model: Any, data: Any, best: np.ndarray) -> tuple[np.ndarray, str]:
    """Parameter uncertainties from the Hessian of twice the NLL at the minimum.

    The Hessian comes from automatic differentiation on the pytorch backend, from central
    finite differences on numpy. Fixed parameters get 0. Returns ``(uncertainties, method)``.
    Raises ``FloatingPointError`` when the Hessian is not positive definite (the uncertainties
    are then undefined, and the fit is not reported as a value).
    """
    tensorlib, _ = pyhf.get_backend()
    fixed = np.asarray(model.config.suggested_fixed(), dtype=bool)
    free = np.flatnonzero(~fixed)
    if tensorlib.name == "pytorch":
        hess, method = _autodiff_hessian(model, data, best), "hessian-autodiff"
        hess = hess[np.ix_(free, free)]
    else:
        hess, method = (
            _finite_difference_hessian(model, data, best, free),
            "hessian-finite-difference",
        )
    if not np.all(np.isfinite(hess)):
        raise FloatingPointError("the Hessian at the minimum has non-finite entries")
    try:
        np.linalg.cholesky(hess)
        cov = 2.0 * np.linalg.inv(hess)
    except np.linalg.LinAlgError:
        raise FloatingPointError("the Hessian at the minimum is not positive definite") from None
    unc = np.zeros_like(best)
    unc[free] = np.sqrt(np.diag(cov))
    return unc, method


def _autodiff_hessian(model: Any, data: Any, best: np.ndarray) -> np.ndarray:
    import torch

    def twice_nll(pars: Any) -> Any:
        return pyhf.infer.mle.twice_nll(pars, data, model)[0]

    point = torch.tensor(best, dtype=torch.float64)
    return torch.autograd.functional.hessian(twice_nll, point).detach().cpu().numpy()


def _finite_difference_hessian(
    model: Any, data: Any, best: np.ndarray, free: np.ndarray
) -> np.ndarray:
    tensorlib, _ = pyhf.get_backend()

    def f(x: np.ndarray) -> float:
        value = pyhf.infer.mle.twice_nll(tensorlib.astensor(x.tolist()), data, model)
        return float(np.asarray(tensorlib.tolist(value), dtype=float).ravel()[0])

    steps = 1e-4 * np.maximum(1.0, np.abs(best))
    f0 = f(best)
    n = len(free)
    hess = np.zeros((n, n))
    for a, i in enumerate(free):
        e_i = np.zeros_like(best)
        e_i[i] = steps[i]
        hess[a, a] = (f(best + e_i) - 2 * f0 + f(best - e_i)) / steps[i] ** 2
        for b in range(a):
            j = free[b]
            e_j = np.zeros_like(best)
            e_j[j] = steps[j]
            hess[a, b] = hess[b, a] = (
                f(best + e_i + e_j)
                - f(best + e_i - e_j)
                - f(best - e_i + e_j)
                + f(best - e_i - e_j)
            ) / (4 * steps[i] * steps[j])
    return hess


def tested_pois(task: FitTask) -> list[float] | None:
    """The POI values whose test statistics decide the result (None for ``fit``)."""
    if task.operation == "hypotest":
        return [float(v) for v in task.settings.poi_values]
    if task.operation == "upper_limit":
        low, high, points = task.settings.scan
        return [float(v) for v in np.linspace(low, high, int(points))]
    return None


def fit_points(model: Any, observed: np.ndarray, captured: list[dict[str, Any]]) -> list[FitPoint]:
    """The captured minimisations as labelled :class:`FitPoint` objects."""
    poi = model.config.poi_index
    points = []
    for c in captured:
        fixed = np.zeros(len(c["x"]), dtype=bool)
        fixed_poi = None
        for i, v in c["fixed"]:
            fixed[i] = True
            if i == poi:
                fixed_poi = v
        if poi is not None and model.config.suggested_fixed()[poi]:
            fixed_poi = None
        same = c["data"].shape == observed.shape and np.array_equal(c["data"], observed)
        points.append(
            FitPoint(
                dataset="data" if same else "asimov",
                poi=fixed_poi,
                x=c["x"],
                data=c["data"],
                fixed=fixed,
                lower=c["bounds"][:, 0],
                upper=c["bounds"][:, 1],
            )
        )
    return points


def run_patch(task: FitTask, patch_index: int) -> PatchResult:
    """Module-level entry point for worker processes: ``PyhfEngine().run_one``."""
    return PyhfEngine().run_one(task, patch_index)
