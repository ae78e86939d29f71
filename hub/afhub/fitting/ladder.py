"""The fallback ladder: a patch no method could certify is tried by the next one.

The batched engine fits (and restarts) what it supports; every patch it does not converge
on, and every patch it does not support, climbs the rungs below in order until one gives a
certified result (``afhub.fitting.certificate``):

1. ``pyhf-scipy``: pyhf with its SciPy optimizer (the task's tolerance and ``maxiter``);
2. ``pyhf-scipy-tight``: the same with tolerance :data:`TIGHT_TOLERANCE` (skipped when the
   task's is already that tight);
3. ``pyhf-minuit``: pyhf with MINUIT (iminuit), tolerance :data:`MINUIT_TOLERANCE`.

When the task asks for MINUIT, the order is the other way round. A rung's result is accepted
only when its certificate passes and no other method's minimum of a fit to the observed
data (the earlier rungs', the batched engine's) is lower than its own by more than
:data:`GAP_TOL` in ``2 NLL``, where the evaluation is accurate enough to say so
(``certificate.cross_check``). A patch is ``not_converged`` only when every rung fails; a
rung that fails for a reason no optimizer can change (an invalid model, a POI value outside
its bounds) ends the ladder with ``failed``. Every attempt, with its diagnostics and
certificate summary, is kept in ``provenance["ladder"]`` of the result.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from afhub.fitting import certificate
from afhub.fitting.pyhf_engine import PyhfEngine, tested_pois
from afhub.fitting.types import FitTask, PatchResult

RUNGS: tuple[str, ...] = ("pyhf-scipy", "pyhf-scipy-tight", "pyhf-minuit")
#: SLSQP tolerance of the ``pyhf-scipy-tight`` rung
TIGHT_TOLERANCE = 1e-10
#: MINUIT tolerance of the ``pyhf-minuit`` rung (EDM goal ``0.002 * tol``; pyhf's default
#: 0.1 stops far above what the certificate accepts)
MINUIT_TOLERANCE = 1e-5
#: a minimum another method found lower than this (2 NLL) rejects a result: what the
#: certificate's Newton-decrement threshold admits, plus the evaluation's accuracy
GAP_TOL = certificate.DECREMENT_TOL + certificate.NLL_TOL
_OPTIMIZER = {"pyhf-scipy": "scipy", "pyhf-scipy-tight": "scipy", "pyhf-minuit": "minuit"}


def rungs_for(task: FitTask) -> tuple[str, ...]:
    """The rungs in the order this task climbs them."""
    tol = task.settings.tolerance
    rungs = [r for r in RUNGS if not (r == "pyhf-scipy-tight" and tol and tol <= TIGHT_TOLERANCE)]
    if task.settings.optimizer == "minuit":
        rungs.remove("pyhf-minuit")
        rungs.insert(0, "pyhf-minuit")
    return tuple(rungs)


def rung_settings(task: FitTask, rung: str) -> Any:
    """The task's settings as the rung runs them (the user's own optimizer keeps the
    user's tolerance on its first rung)."""
    s = replace(task.settings, optimizer=_OPTIMIZER[rung], engine="pyhf")
    if rung == "pyhf-scipy-tight":
        return replace(s, tolerance=TIGHT_TOLERANCE)
    if rung == "pyhf-minuit" and not (task.settings.optimizer == "minuit" and s.tolerance):
        return replace(s, tolerance=MINUIT_TOLERANCE)
    if rung == "pyhf-scipy" and task.settings.optimizer != "scipy":
        return replace(s, tolerance=None)
    return s


def _trim(diagnostics: dict[str, Any]) -> dict[str, Any]:
    keep = ("reason", "n_fits", "uncertainty_method", "warnings", "batched_fallback_reason")
    out = {k: diagnostics[k] for k in keep if k in diagnostics}
    failed = diagnostics.get("failed_fits")
    if failed:
        out["failed_fits"] = failed[:3]
    return out


def _cert_summary(cert: dict[str, Any]) -> dict[str, Any]:
    keys = ("ok", "why", "worst", "evaluator", "rounding", "cross_check", "ordering", "precision")
    return {k: cert[k] for k in keys if k in cert}


def attempt_record(rung: str, result: PatchResult) -> dict:
    """What the ladder keeps of one attempt (its time goes to the result's ``timings`` as
    ``ladder_<rung>``: provenance depends only on the numbers, not on the machine's load)."""
    return {
        "rung": rung,
        "engine": result.engine,
        "status": result.status,
        "reason": result.diagnostics.get("reason"),
        "certificate": _cert_summary(result.certificate),
        "diagnostics": _trim(result.diagnostics),
    }


def fit_labels(result: PatchResult) -> list[tuple[str, float | None]]:
    """``(fit label, 2 NLL)`` of a result's fits (certificate entries or, for the batched
    engine, its per-fit diagnostics)."""
    fits = result.certificate.get("fits")
    if fits:
        return [(f["fit"], f.get("twice_nll")) for f in fits]
    return certificate.batched_labels(result.diagnostics, poi_values(result))


def poi_values(result: PatchResult) -> list[float] | None:
    """The POI values of a hypotest/upper-limit result (from values or provenance)."""
    if "poi_values" in result.values:
        return list(result.values["poi_values"])
    settings = result.provenance.get("settings") or {}
    operation = result.provenance.get("operation")
    if operation == "upper_limit" and "scan" in settings:
        import numpy as np

        low, high, points = settings["scan"]
        return np.linspace(float(low), float(high), int(points)).tolist()
    if "poi_values" in settings:
        return list(settings["poi_values"])
    return None


def certify_batched_result(result: PatchResult, task: FitTask) -> PatchResult:
    """Attach a certificate to a batched-engine result; one that fails it is
    ``not_converged`` (its values go to ``diagnostics["uncertified_values"]``)."""
    pois = _task_pois(task)
    result.certificate = certificate.certify_batched(result.diagnostics, pois)
    if result.status == "converged" and not result.certificate["ok"]:
        result.status = "not_converged"
        result.diagnostics["reason"] = "no certificate: " + result.certificate["why"]
        result.diagnostics["uncertified_values"] = result.values
        result.values = {}
    return result


def _task_pois(task: FitTask) -> list[float] | None:
    return tested_pois(task)


def needs_ladder(result: PatchResult) -> bool:
    """Whether a (batched) result goes up the ladder: no certified value, for a reason an
    optimizer might change (not converged, or non-finite numbers)."""
    if result.status == "not_converged":
        return True
    return result.status == "failed" and "non-finite" in str(result.diagnostics.get("reason"))


def _final_failure(result: PatchResult) -> bool:
    """A failure that another optimizer cannot change."""
    return result.status in ("failed", "unsupported")


def run_ladder(
    task: FitTask,
    patch_index: int = 0,
    previous: list[PatchResult] | tuple[PatchResult, ...] = (),
    rungs: tuple[str, ...] | None = None,
) -> PatchResult:
    """Climb the rungs for one patch; ``previous``: earlier attempts (the batched engine's
    result), recorded first and used in the cross-check."""
    attempts = [attempt_record(r.provenance.get("rung", r.engine), r) for r in previous]
    others = {r.provenance.get("rung", r.engine): fit_labels(r) for r in previous}
    last: PatchResult | None = None
    times = {
        f"ladder_{r.provenance.get('rung', r.engine)}": r.timings.get("total", 0.0)
        for r in previous
    }
    for rung in rungs or rungs_for(task):
        settings = rung_settings(task, rung)
        t0 = time.perf_counter()
        result = PyhfEngine().run_one(replace(task, settings=settings), patch_index)
        result.provenance["rung"] = rung
        if result.status == "converged":
            check = certificate.cross_check(
                fit_labels(result), others, result.certificate.get("rounding", 0.0), GAP_TOL
            )
            result.certificate["cross_check"] = check
            if not check["ok"]:
                result.status = "not_converged"
                result.certificate["ok"] = False
                result.certificate["why"] = check["why"]
                result.diagnostics["reason"] = "no certificate: " + check["why"]
                result.diagnostics["uncertified_values"] = result.values
                result.values = {}
        attempts.append(attempt_record(rung, result))
        times[f"ladder_{rung}"] = time.perf_counter() - t0
        others[rung] = fit_labels(result)
        last = result
        if result.status == "converged" or _final_failure(result):
            break
    assert last is not None
    last.provenance["ladder"] = attempts
    last.timings.update(times)
    last.timings["total"] = sum(times.values())
    if last.status == "not_converged":
        reasons = "; ".join(f"{a['rung']}: {a['reason']}" for a in attempts)
        last.diagnostics["reason"] = f"no method converged with a certificate ({reasons})"
    return last


def ladder_patch(
    task: FitTask, patch_index: int, previous: list[dict[str, Any]] | None = None
) -> PatchResult:
    """Module-level entry point for worker processes: ``previous`` as result dicts."""
    return run_ladder(task, patch_index, [PatchResult(**p) for p in previous or ()])
