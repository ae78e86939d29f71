"""A batched, bound-constrained Newton minimiser with per-item convergence.

Projected Newton (Bertsekas 1982) with a damped (modified) Newton system and an Armijo line
search along the projected path, run on all items of a batch at once:

1. exact gradient and Hessian of every active item (:meth:`BatchedModel.nll_grad_hess`);
2. variables at a bound whose gradient pushes outward are held there for the step, fixed
   parameters always are;
3. the Newton system on the remaining variables is solved by a batched Cholesky
   factorisation; items whose Hessian is not positive definite get a damping term that grows
   until it is;
4. the step is projected onto the bounds and halved until the Armijo condition holds.

An item has converged when its Hessian on the working set is positive definite without
damping and its Newton decrement ``g^T H^-1 g`` is below ``tol`` (the expected distance to the
minimum in NLL units is half of it). Items leave the batch when they converge, so late
iterations are cheap. Items that reach ``maxiter`` or cannot make progress are reported as
not converged, never silently accepted; the one exception is an item where no step lowers
the NLL any more while its Hessian is positive definite and its Newton decrement is below
``stall_tol``: it sits at the minimum to within floating-point precision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from afhub.fitting.batched.model import BatchedModel, Data


def _maybe(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    return None if value is None else fn(value)


@dataclass
class FitResult:
    """Per-item results of :func:`minimize` (tensors with leading batch axis)."""

    x: torch.Tensor
    twice_nll: torch.Tensor
    converged: torch.Tensor  # bool
    nit: torch.Tensor  # long
    grad_norm: torch.Tensor  # max |projected gradient|
    newton_decrement: torch.Tensor
    #: Hessian of the NLL at the solution (restricted to the working set), if asked for
    hessian: torch.Tensor | None = None
    working: torch.Tensor | None = None  # bool [B, P]
    #: ``2 * nll_deviance`` at the solution: differences between fits to the same data are
    #: accurate (``twice_nll`` carries the rounding of the constants, see BatchedModel.nll)
    twice_nll_deviance: torch.Tensor | None = None
    #: max over the working set of ``|g_i| / sqrt(H_ii)``: NLL change per standard deviation
    grad_scaled: torch.Tensor | None = None

    def take(self, idx: torch.Tensor) -> FitResult:
        """Items ``idx`` of the result."""
        return FitResult(
            **{f.name: _maybe(getattr(self, f.name), lambda v: v[idx]) for f in fields(self)}
        )

    def clone(self) -> FitResult:
        """A copy whose tensors can be written without changing this result."""
        return FitResult(
            **{f.name: _maybe(getattr(self, f.name), torch.clone) for f in fields(self)}
        )

    @staticmethod
    def cat(parts: list[FitResult]) -> FitResult:
        """The results of consecutive chunks as one result."""
        values: dict[str, Any] = {}
        for f in fields(FitResult):
            first = getattr(parts[0], f.name)
            values[f.name] = (
                None if first is None else torch.cat([getattr(p, f.name) for p in parts])
            )
        return FitResult(**values)

    def deviance(self) -> torch.Tensor:
        """``twice_nll_deviance`` where known, else ``twice_nll``."""
        return self.twice_nll if self.twice_nll_deviance is None else self.twice_nll_deviance

    def diagnostics(self, i: int) -> dict:
        """JSON-safe diagnostics of item ``i``."""
        return {
            "success": bool(self.converged[i]),
            "nit": int(self.nit[i]),
            "grad_norm": float(self.grad_norm[i]),
            "newton_decrement": float(self.newton_decrement[i]),
            "twice_nll": float(self.twice_nll[i]),
            "twice_nll_deviance": float(self.deviance()[i]),
            "grad_scaled": None if self.grad_scaled is None else float(self.grad_scaled[i]),
        }


def _newton_step(
    hess: torch.Tensor, grad: torch.Tensor, work: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve ``H_w d = -g_w`` on the working set ``work``, modifying ``H_w`` where not PD.

    Where ``H_w`` is positive definite the step is the Newton step (``lam = 0``). Elsewhere
    (``lam = 1``) the Hessian is first scaled to unit diagonal, ``S = D^-1 H_w D^-1`` with
    ``D = sqrt|diag H_w|``, and its eigenvalues are replaced by ``max(|ev|, 1e-3)``: the
    step follows negative curvature downhill with the length the curvature suggests. The
    scaling makes the modification independent of the parameters' units, so a stiff
    constraint (a diagonal entry of 1e11) does not damp every other direction, and each item
    is treated on its own (nothing depends on the other items of the batch or on padding).
    """
    B, _P = grad.shape
    wf = work.to(hess.dtype)
    hw = hess * wf.unsqueeze(-1) * wf.unsqueeze(-2) + torch.diag_embed(1 - wf)
    chol, info = torch.linalg.cholesky_ex(hw)
    lam = torch.zeros(B, dtype=hess.dtype, device=hess.device)
    rhs = -(grad * wf).unsqueeze(-1)
    step = torch.cholesky_solve(rhs, chol)[..., 0] * wf
    bad = (info != 0).nonzero()[:, 0]
    if bad.numel():
        hb, wb, gb = hw[bad], wf[bad], rhs[bad][..., 0]
        d = torch.diagonal(hb, dim1=-2, dim2=-1).abs().clamp_min(1e-300).sqrt()
        d = torch.where(wb > 0, d, torch.ones_like(d))
        scaled = hb / (d.unsqueeze(-1) * d.unsqueeze(-2))
        ev, vec = torch.linalg.eigh(scaled)
        ev = ev.abs().clamp_min(1e-3)
        coef = (vec.transpose(-1, -2) @ (gb / d).unsqueeze(-1))[..., 0] / ev
        step[bad] = (vec @ coef.unsqueeze(-1))[..., 0] / d * wb
        lam[bad] = 1.0
    return step, lam


@dataclass
class _Record:
    """Per-item outputs of :func:`minimize`, written as the items iterate."""

    twice_nll: torch.Tensor
    grad_scaled: torch.Tensor
    converged: torch.Tensor
    nit: torch.Tensor
    grad_norm: torch.Tensor
    newton_decrement: torch.Tensor
    hessian: torch.Tensor | None
    working: torch.Tensor | None

    @classmethod
    def empty(cls, x0: torch.Tensor, keep_hessian: bool) -> _Record:
        B, P = x0.shape
        dev, dt = x0.device, x0.dtype

        def nan() -> torch.Tensor:
            return torch.full((B,), float("nan"), dtype=dt, device=dev)

        return cls(
            twice_nll=nan(),
            grad_scaled=nan(),
            converged=torch.zeros(B, dtype=torch.bool, device=dev),
            nit=torch.zeros(B, dtype=torch.long, device=dev),
            grad_norm=nan(),
            newton_decrement=nan(),
            hessian=torch.zeros(B, P, P, dtype=dt, device=dev) if keep_hessian else None,
            working=torch.zeros(B, P, dtype=torch.bool, device=dev) if keep_hessian else None,
        )

    def result(self, x: torch.Tensor, model: BatchedModel, data: Data) -> FitResult:
        return FitResult(
            x=x,
            twice_nll=self.twice_nll + 2 * model.nll_constant(data),
            converged=self.converged,
            nit=self.nit,
            grad_norm=self.grad_norm,
            newton_decrement=self.newton_decrement,
            hessian=self.hessian,
            working=self.working,
            twice_nll_deviance=self.twice_nll,
            grad_scaled=self.grad_scaled,
        )


@dataclass
class _Iterate:
    """One Newton iteration of the active items: value, gradient, Hessian, working set,
    step, damping flag and Newton decrement (``finite``: the point is inside the model)."""

    fa: torch.Tensor
    ga: torch.Tensor
    ha: torch.Tensor
    gw: torch.Tensor
    work: torch.Tensor
    finite: torch.Tensor
    step: torch.Tensor
    lam: torch.Tensor
    dec: torch.Tensor


def _iterate(sub: BatchedModel, dsub: Data, xa: torch.Tensor, fr: torch.Tensor) -> _Iterate:
    """Derivatives at ``xa``, the working set (bounds that hold) and the Newton step."""
    fa, ga, ha = sub.nll_grad_hess(xa, dsub, deviance=True)
    assert ha is not None  # asked for
    lo, hi = sub.lower, sub.upper
    eps = 1e-9 * (1 + torch.maximum(lo.abs(), hi.abs()))
    at_lo = fr & (xa <= lo + eps) & (ga > 0)
    at_hi = fr & (xa >= hi - eps) & (ga < 0)
    work = fr & ~at_lo & ~at_hi
    gw = torch.where(work, ga, torch.zeros_like(ga))
    finite = torch.isfinite(fa) & torch.isfinite(gw).all(-1) & torch.isfinite(ha).flatten(1).all(-1)
    eye = torch.eye(xa.shape[1], dtype=xa.dtype, device=xa.device)
    ha = torch.where(finite[:, None, None], ha, eye)
    gw = torch.where(finite[:, None], gw, torch.zeros_like(gw))
    step, lam = _newton_step(ha, gw, work)
    dec = -(gw * step).sum(-1)
    return _Iterate(fa, ga, ha, gw, work, finite, step, lam, dec)


def _record(rec: _Record, active: torch.Tensor, it: int, s: _Iterate) -> None:
    P = s.gw.shape[1]
    rec.twice_nll[active] = 2 * s.fa
    rec.grad_norm[active] = s.gw.abs().amax(-1) if P else torch.zeros_like(s.fa)
    hdiag = torch.diagonal(s.ha, dim1=-2, dim2=-1).abs().clamp_min(1e-300)
    rec.grad_scaled[active] = (s.gw.abs() / hdiag.sqrt()).amax(-1) if P else torch.zeros_like(s.fa)
    rec.newton_decrement[active] = s.dec
    rec.nit[active] = it
    if rec.hessian is not None and rec.working is not None:
        rec.hessian[active] = s.ha
        rec.working[active] = s.work


def _line_search(
    sub: BatchedModel,
    dsub: Data,
    xa: torch.Tensor,
    fa: torch.Tensor,
    ga: torch.Tensor,
    step: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projected backtracking line search (Armijo): the new points and which items found an
    acceptable step.

    Every item tries the full step first; the items that reject it go on halving their steps
    as a sub-batch of their own (most items accept the full step, so the later tries cost
    little). Each item's tries depend on that item alone.
    """
    x_new = xa.clone()
    accepted = torch.zeros_like(fa, dtype=torch.bool)
    rows = torch.arange(fa.shape[0], device=fa.device)
    model, data, t = sub, dsub, torch.ones_like(fa)
    for _ in range(40):
        cand = torch.minimum(torch.maximum(xa + t[:, None] * step, model.lower), model.upper)
        fn = model.nll_deviance(cand, data)
        ok = (fn <= fa + 1e-4 * (ga * (cand - xa)).sum(-1)) & torch.isfinite(fn)
        x_new[rows[ok]] = cand[ok]
        accepted[rows[ok]] = True
        if bool(ok.all()):
            break
        left = (~ok).nonzero()[:, 0]
        if left.numel() < ok.numel():
            model, data, rows = model.take(left), data.take(left), rows[left]
            xa, fa, ga, step = xa[left], fa[left], ga[left], step[left]
        t = t[left] * 0.5
    return x_new, accepted


def minimize(
    model: BatchedModel,
    data: Data,
    x0: torch.Tensor,
    free: torch.Tensor,
    maxiter: int = 200,
    tol: float = 1e-10,
    keep_hessian: bool = False,
    stall_tol: float = 1e-8,
) -> FitResult:
    """Minimise the NLL of every item from ``x0``; ``free`` marks the parameters to fit."""
    x = torch.minimum(torch.maximum(x0, model.lower), model.upper).clone()
    rec = _Record.empty(x0, keep_hessian)
    active = torch.arange(x0.shape[0], device=x0.device)
    sub, dsub, fr = model, data, free
    for it in range(maxiter + 1):
        xa = x[active]
        s = _iterate(sub, dsub, xa, fr)
        _record(rec, active, it, s)
        done = s.finite & (s.lam == 0) & (s.dec < tol)
        rec.converged[active] = done
        keep = s.finite & ~done
        if it == maxiter or not bool(keep.any()):
            break
        fa, ga, step, dec, lam = s.fa, s.ga, s.step, s.dec, s.lam
        if not bool(keep.all()):
            kidx = keep.nonzero()[:, 0]
            active = active[kidx]
            sub, dsub, fr = sub.take(kidx), dsub.take(kidx), fr[kidx]
            xa, fa, ga, step, dec, lam = (t[kidx] for t in (xa, fa, ga, step, dec, lam))
        x_new, accepted = _line_search(sub, dsub, xa, fa, ga, step)
        x[active] = x_new
        # no step decreases the NLL any more and the Newton decrement is negligible: a
        # minimum to within floating-point precision
        # (converged); no acceptable step otherwise: the item stops, not converged
        stalled = ~accepted & (dec < stall_tol) & (lam == 0)
        rec.converged[active[stalled]] = True
        if not bool(accepted.all()):
            kidx = accepted.nonzero()[:, 0]
            active = active[kidx]
            sub, dsub, fr = sub.take(kidx), dsub.take(kidx), fr[kidx]
            if active.numel() == 0:
                break
    return rec.result(x, model, data)
