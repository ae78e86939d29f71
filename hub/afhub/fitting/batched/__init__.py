"""The batched fitting engine: every patch of a patchset in one torch computation.

The patches of a published patchset share their structure and differ in the signal. This
engine compiles each patched workspace (:mod:`.spec`), pads them to common shapes and stacks
them (:mod:`.model`), fits all of them at once with a batched bounded Newton method
(:mod:`.optimize`), and computes asymptotic CLs for every patch and every POI value together
(:mod:`.asymptotics`). It runs on a CPU or a CUDA device, in float64.

Patches it cannot handle are reported by :meth:`BatchedEngine.unsupported_reason`; the fitting
service sends those to the pyhf engine. See ``docs/fitting-engine.md``.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import numpy as np
import torch

from afhub.fitting.batched import asymptotics
from afhub.fitting.batched.allocator import keep_freed_memory
from afhub.fitting.batched.model import BatchedModel, Data
from afhub.fitting.batched.optimize import FitResult
from afhub.fitting.batched.spec import (
    CompiledModel,
    SampleCache,
    Unsupported,
    apply_patch,
    compile_spec,
)
from afhub.fitting.types import FitTask, PatchResult, all_finite

__all__ = ["BatchedEngine"]

SUPPORTED_OPERATIONS = ("hypotest", "upper_limit", "fit")
SUPPORTED_TEST_STATS = ("qtilde", "q")
#: bytes of working tensors per chunk of fits (see BatchedEngine)
DEFAULT_MEMORY_BUDGET = 1 << 30


@contextlib.contextmanager
def _threads(n: int | None):
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class BatchedEngine:
    """Fit all supported patches of a :class:`FitTask` together with torch.

    Args:
        device: torch device (``"cpu"``, ``"cuda"``, ``"cuda:1"``); chosen by the worker.
        dtype: floating-point type; float64 (the default) is what the correctness gate uses.
        chunk_size: largest number of fits evaluated together.
        memory_budget: bytes the fits of one chunk may use for their working tensors
            (``BatchedModel.bytes_per_fit``); chunks are made small enough to stay within
            it. The default, 1 GiB, keeps a 125-patch grid of a 126-parameter model under
            2 GB of peak memory for the whole process; ``None`` uses ``chunk_size`` only.
        maxiter: Newton iterations per fit (further capped by ``settings.maxiter``).
        tol: convergence threshold on the Newton decrement (NLL units).
        num_threads: torch intra-op threads while running (``None`` keeps torch's setting).
        reuse_memory: on a CPU, keep up to ``memory_budget`` (1 GiB without one) of freed
            memory in the process so that each Newton iteration reuses the pages of the one
            before instead of faulting them in again (:mod:`.allocator`; a process-wide
            setting of glibc's malloc, made at the first run).
    """

    name = "batched"

    def __init__(
        self,
        device: str = "cpu",
        dtype: torch.dtype = torch.float64,
        chunk_size: int = 2048,
        maxiter: int = 200,
        tol: float = 1e-10,
        num_threads: int | None = None,
        memory_budget: int | None = DEFAULT_MEMORY_BUDGET,
        reuse_memory: bool = True,
    ) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        self.dtype = dtype
        self.chunk_size = chunk_size
        self.maxiter = maxiter
        self.tol = tol
        self.num_threads = num_threads
        self.memory_budget = memory_budget
        self.reuse_memory = reuse_memory
        self._cache: tuple[FitTask, list[CompiledModel | str]] | None = None

    # ------------------------------------------------------------------ support
    def _task_reason(self, task: FitTask) -> str | None:
        s = task.settings
        if task.operation not in SUPPORTED_OPERATIONS:
            return f"operation {task.operation!r} is not supported by the batched engine"
        if s.calctype != "asymptotics":
            return f"calculator {s.calctype!r} (the batched engine does asymptotics only)"
        if task.operation != "fit" and s.test_stat not in SUPPORTED_TEST_STATS:
            return f"test statistic {s.test_stat!r} (supported: qtilde, q)"
        if s.normsys_interpcode != "code4":
            return f"normsys interpolation {s.normsys_interpcode!r} (only code4)"
        if s.histosys_interpcode != "code4p":
            return f"histosys interpolation {s.histosys_interpcode!r} (only code4p)"
        if task.operation == "upper_limit" and int(s.scan[2]) < 2:
            return "an upper-limit scan needs at least two points"
        return None

    def _compile(self, task: FitTask) -> list[CompiledModel | str]:
        """Per patch: the compiled model, or the reason it is not supported."""
        if self._cache is not None and self._cache[0] is task:
            return self._cache[1]
        patches = task.patches or ({"name": None, "patch": []},)
        reason = self._task_reason(task)
        out: list[CompiledModel | str] = []
        cache = SampleCache()
        for p in patches:
            if reason is not None:
                out.append(reason)
                continue
            try:
                spec = apply_patch(task.workspace, p.get("patch") or [])
                out.append(
                    compile_spec(
                        spec,
                        measurement=task.measurement,
                        normsys_interpcode=task.settings.normsys_interpcode,
                        histosys_interpcode=task.settings.histosys_interpcode,
                        cache=cache,
                    )
                )
            except Unsupported as err:
                out.append(str(err))
            except (KeyError, TypeError, ValueError, AttributeError) as err:
                out.append(f"workspace or patch not understood: {err!r}")
        self._cache = (task, out)
        return out

    def unsupported_reason(self, task: FitTask) -> list[str | None]:
        """Per patch: ``None`` if this engine handles it, else a human-readable reason."""
        return [c if isinstance(c, str) else None for c in self._compile(task)]

    # ------------------------------------------------------------------ running
    def run(self, task: FitTask) -> list[PatchResult]:
        """Results for the supported patches of ``task``, in order (``engine="batched"``)."""
        t0 = time.perf_counter()
        compiled = self._compile(task)
        patches = task.patches or ({"name": None, "patch": []},)
        chosen = [
            (p.get("name"), c)
            for p, c in zip(patches, compiled, strict=True)
            if not isinstance(c, str)
        ]
        if not chosen:
            return []
        if self.reuse_memory and self.device.type == "cpu":
            keep_freed_memory(self.memory_budget or DEFAULT_MEMORY_BUDGET)
        t1 = time.perf_counter()
        with _threads(self.num_threads), torch.no_grad():
            model, data = BatchedModel.from_compiled(
                [c for _, c in chosen], device=self.device, dtype=self.dtype
            )
            t2 = time.perf_counter()
            if task.operation == "fit":
                results = self._run_fit(task, chosen, model, data)
            else:
                results = self._run_hypotest(task, chosen, model, data)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        t3 = time.perf_counter()
        n = len(results)
        for r in results:
            r.timings = {
                "total": (t3 - t0) / n,
                "batch_total": t3 - t0,
                "batch_compile": t1 - t0,
                "batch_build": t2 - t1,
                "batch_fit": t3 - t2,
                "batch_size": float(n),
            }
        return results

    def _provenance(self, task: FitTask) -> dict[str, Any]:
        return {
            "engine": self.name,
            "backend": "torch",
            "backend_version": torch.__version__,
            "torch": torch.__version__,
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "workspace_sha256": task.workspace_sha256,
            "measurement": task.measurement,
            "settings": task.settings.to_dict(),
            "optimizer": {
                "method": "batched projected Newton (exact Hessian)",
                "tol_newton_decrement": self.tol,
                "maxiter": self._maxiter(task),
                "objective": "NLL in deviance form (BatchedModel.nll_deviance)",
                "memory_budget": self.memory_budget,
            },
        }

    def _maxiter(self, task: FitTask) -> int:
        return max(1, min(self.maxiter, int(task.settings.maxiter)))

    def _chunk(self, model: BatchedModel) -> int:
        """Fits per chunk: ``chunk_size``, or fewer where the memory budget needs it."""
        if self.memory_budget is None:
            return self.chunk_size
        return max(1, min(self.chunk_size, self.memory_budget // model.bytes_per_fit()))

    def _fit_kwargs(self, task: FitTask) -> dict[str, Any]:
        return {"maxiter": self._maxiter(task), "tol": self.tol}

    def _run_hypotest(
        self,
        task: FitTask,
        chosen: list[tuple[str | None, CompiledModel]],
        model: BatchedModel,
        data: Data,
    ) -> list[PatchResult]:
        s = task.settings
        if task.operation == "upper_limit":
            low, high, points = s.scan
            mus = np.linspace(float(low), float(high), int(points))
        else:
            mus = np.asarray(s.poi_values, dtype=float)
        prov = self._provenance(task)
        results: list[PatchResult | None] = [None] * len(chosen)
        # pyhf refuses POI values outside the POI's bounds; so does this engine
        ok_items = []
        for i, (name, c) in enumerate(chosen):
            lo, hi = c.lower[c.poi_index], c.upper[c.poi_index]
            if mus.size == 0 or not np.all((mus >= lo) & (mus <= hi)):
                results[i] = PatchResult(
                    patch=name,
                    engine=self.name,
                    status="failed",
                    diagnostics={"reason": f"POI values outside the POI bounds [{lo}, {hi}]"},
                    provenance=prov,
                )
            else:
                ok_items.append(i)
        if ok_items:
            idx = torch.tensor(ok_items, device=self.device)
            sub_model = model.take(idx) if len(ok_items) < len(chosen) else model
            sub_data = data.take(idx) if len(ok_items) < len(chosen) else data
            res = asymptotics.hypotest(
                sub_model,
                sub_data,
                torch.as_tensor(mus, dtype=self.dtype, device=self.device),
                test_stat=s.test_stat,
                chunk_size=self._chunk(sub_model),
                **self._fit_kwargs(task),
            )
            cls_obs = res.cls_obs.cpu().numpy()
            cls_exp = res.cls_exp.cpu().numpy()
            conv = res.converged.cpu().numpy()
            M = len(mus)
            for j, i in enumerate(ok_items):
                name = chosen[i][0]
                diag = _hypotest_diagnostics(res.fits, j, M)
                values: dict[str, Any] = {
                    "poi_values": mus.tolist(),
                    "cls_obs": cls_obs[j].tolist(),
                    "cls_exp": cls_exp[j].tolist(),
                }
                if task.operation == "upper_limit":
                    obs_limit, exp_limits = asymptotics.interpolate_limits(
                        mus, cls_obs[j], cls_exp[j], level=s.level
                    )
                    values = {"obs_limit": obs_limit, "exp_limits": exp_limits, **values}
                results[i] = _finish(name, self.name, bool(conv[j]), values, diag, prov)
        return [r for r in results if r is not None]

    def _run_fit(
        self,
        task: FitTask,
        chosen: list[tuple[str | None, CompiledModel]],
        model: BatchedModel,
        data: Data,
    ) -> list[PatchResult]:
        prov = self._provenance(task)
        fits = _chunked_fit(model, data, self._chunk(model), self._fit_kwargs(task))
        x = fits.x.cpu().numpy()
        cov_diag = _uncertainties(fits).cpu().numpy()
        out = []
        for i, (name, c) in enumerate(chosen):
            pars = {n: x[i, sl].tolist() for n, sl in c.par_slices.items()}
            uncs = {n: cov_diag[i, sl].tolist() for n, sl in c.par_slices.items()}
            values = {
                "parameters": pars,
                "uncertainties": uncs,
                "twice_nll": float(fits.twice_nll[i]),
            }
            diag = {"fits": {"free_data": fits.diagnostics(i)}}
            out.append(_finish(name, self.name, bool(fits.converged[i]), values, diag, prov))
        return out


def _chunked_fit(model: BatchedModel, data: Data, chunk: int, kwargs) -> FitResult:
    return asymptotics.minimize_chunked(
        model, data, model.init, model.free, chunk, keep_hessian=True, **kwargs
    )


def _uncertainties(fits: FitResult) -> torch.Tensor:
    """Square roots of the diagonal of the inverse Hessian on the working set (0 elsewhere)."""
    if fits.hessian is None or fits.working is None:
        raise ValueError("the fits were run without keep_hessian")
    work = fits.working.to(fits.hessian.dtype)
    h = fits.hessian * work.unsqueeze(-1) * work.unsqueeze(-2) + torch.diag_embed(1 - work)
    cov = torch.linalg.inv(h)
    var = torch.diagonal(cov, dim1=-2, dim2=-1) * work
    return torch.sqrt(torch.clamp(var, min=0.0))


def _hypotest_diagnostics(fits: asymptotics.HypotestFits, j: int, M: int) -> dict[str, Any]:
    per_poi = range(j * M, (j + 1) * M)
    return {
        "fits": {
            "free_data": fits.free_data.diagnostics(j),
            "asimov_generation": fits.asimov_gen.diagnostics(j),
            "free_asimov": fits.free_asimov.diagnostics(j),
            "fixed_poi_data": [fits.fixed_data.diagnostics(k) for k in per_poi],
            "fixed_poi_asimov": [fits.fixed_asimov.diagnostics(k) for k in per_poi],
        }
    }


def _finish(
    name: str | None,
    engine: str,
    converged: bool,
    values: dict[str, Any],
    diagnostics: dict[str, Any],
    provenance: dict[str, Any],
) -> PatchResult:
    """A converged result with finite values, or a result that carries no values."""
    if not converged:
        diagnostics["reason"] = "at least one fit did not converge"
        return PatchResult(name, engine, "not_converged", {}, diagnostics, {}, provenance)
    if not all_finite(values):
        diagnostics["reason"] = "non-finite result"
        return PatchResult(name, engine, "failed", {}, diagnostics, {}, provenance)
    return PatchResult(name, engine, "converged", values, diagnostics, {}, provenance)
