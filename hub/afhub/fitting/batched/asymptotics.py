"""The asymptotic calculator (arXiv:1007.1727) for a batch of models and POI values.

It reproduces pyhf 0.7.6's ``AsymptoticCalculator`` step for step, but with every fit of every
patch and every POI value done together:

1. per patch: the free fit to the observed data, and the fit with the POI fixed at 0 whose
   expected data (main and auxiliary) are the Asimov data;
2. per patch: the free fit to the Asimov data (started at the point that generated them);
   per (patch, POI value): the fixed-POI fits to the observed and to the Asimov data, each
   from two starting points, keeping the lower minimum;
3. free fits that a fixed-POI fit undercuts (a local minimum) start again from there.

Then ``t = clip(2 nll(fixed) - 2 nll(free), 0)``, ``q = 0 if mu_hat > mu else t`` (with the
POI's lower bound at 0 this is ``qtilde``), and CLs from the normal distributions of
``sqrt(q)`` as pyhf computes them, including the -2..+2 sigma expected band.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from afhub.fitting.batched.model import BatchedModel, Data
from afhub.fitting.batched.optimize import FitResult, minimize

N_SIGMA = (2.0, 1.0, 0.0, -1.0, -2.0)


@dataclass
class HypotestFits:
    """All fits of a batched hypotest (items of the per-POI fits are patch-major)."""

    free_data: FitResult  # [B]
    asimov_gen: FitResult  # [B]
    free_asimov: FitResult  # [B]
    fixed_data: FitResult  # [B * M]
    fixed_asimov: FitResult  # [B * M]


@dataclass
class HypotestResult:
    """CLs values ``[B, M]`` and ``[B, M, 5]`` plus per-patch convergence ``[B]``."""

    cls_obs: torch.Tensor
    cls_exp: torch.Tensor
    qmu: torch.Tensor
    qmu_asimov: torch.Tensor
    converged: torch.Tensor
    fits: HypotestFits


def minimize_chunked(
    model: BatchedModel,
    data: Data,
    x0: torch.Tensor,
    free: torch.Tensor,
    chunk_size: int,
    items: torch.Tensor | None = None,
    **kwargs,
) -> FitResult:
    """:func:`minimize` in chunks of at most ``chunk_size`` fits (bounds peak memory).

    Fit ``i`` uses model item ``items[i]`` (default: item ``i``); the model is indexed chunk
    by chunk, so it is never replicated for all fits at once.
    """
    B = x0.shape[0]
    if items is None and chunk_size >= B:
        return minimize(model, data, x0, free, **kwargs)
    parts = []
    for start in range(0, B, chunk_size):
        idx = torch.arange(start, min(B, start + chunk_size), device=x0.device)
        sub = model.take(idx if items is None else items[idx])
        parts.append(minimize(sub, data.take(idx), x0[idx], free[idx], **kwargs))
    return FitResult.cat(parts)


def _with_poi(x: torch.Tensor, poi_index: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[torch.arange(x.shape[0], device=x.device), poi_index] = value
    return x


def _poi_fixed(free: torch.Tensor, poi_index: torch.Tensor) -> torch.Tensor:
    free = free.clone()
    free[torch.arange(free.shape[0], device=free.device), poi_index] = False
    return free


def select_lower(a: FitResult, b: FitResult) -> FitResult:
    """Per item, the converged result with the lower NLL (``a`` where neither converged)."""
    use_b = b.converged & (~a.converged | (b.deviance() < a.deviance()))

    def pick(x, y):
        if x is None or y is None:
            return None
        mask = use_b.view(-1, *([1] * (x.dim() - 1)))
        return torch.where(mask, y, x)

    return FitResult(
        **{f.name: pick(getattr(a, f.name), getattr(b, f.name)) for f in fields(FitResult)}
    )


def _refit_from_better_points(
    model: BatchedModel,
    data: Data,
    free_fit: FitResult,
    candidates: list[tuple[FitResult, torch.Tensor]],
    chunk_size: int,
    **fit_kwargs,
) -> FitResult:
    """Restart free fits that a feasible point of another fit undercuts.

    Every fixed-POI fit is a feasible point of the free fit; if one has a lower NLL than the
    free fit, the free fit stopped in a local minimum and is restarted from the best such
    point. ``candidates`` pairs fit results with the item (patch) index of each of their rows.
    """
    best = free_fit.deviance().clone()
    start = free_fit.x.clone()
    for fits, owner in candidates:
        dev = fits.deviance()
        ok = fits.converged & (dev < best.index_select(0, owner) - 1e-9)
        if bool(ok.any()):
            rows = ok.nonzero()[:, 0]
            for r in rows.tolist():
                b = int(owner[r])
                if dev[r] < best[b] - 1e-9:
                    best[b] = dev[r]
                    start[b] = fits.x[r]
    redo = (best < free_fit.deviance() - 1e-9).nonzero()[:, 0]
    if redo.numel() == 0:
        return free_fit
    again = minimize_chunked(
        model.take(redo), data.take(redo), start[redo], model.free[redo], chunk_size, **fit_kwargs
    )
    merged = free_fit.clone()
    for f in fields(FitResult):
        if getattr(merged, f.name) is not None and getattr(again, f.name) is not None:
            getattr(merged, f.name)[redo] = getattr(again, f.name)
    return merged


def _first_fits(
    model: BatchedModel, data: Data, chunk_size: int, **fit_kwargs
) -> tuple[FitResult, FitResult]:
    """Stage 1: the free fit to the data and the Asimov-generating fit (POI = 0), together."""
    B = model.batch_size
    ar = torch.arange(B, device=model.init.device)
    zeros = torch.zeros(B, dtype=model.init.dtype, device=model.init.device)
    idx2 = torch.cat([ar, ar])
    stage1 = minimize_chunked(
        model,
        data.take(idx2),
        torch.cat([model.init, _with_poi(model.init, model.poi_index, zeros)]),
        torch.cat([model.free, _poi_fixed(model.free, model.poi_index)]),
        chunk_size,
        items=idx2,
        **fit_kwargs,
    )
    return stage1.take(ar), stage1.take(ar + B)


def _second_fits(
    model: BatchedModel,
    fits: tuple[Data, Data, FitResult, FitResult],
    poi_values: torch.Tensor,
    chunk_size: int,
    **fit_kwargs,
) -> tuple[FitResult, FitResult, FitResult]:
    """Stage 2: the free fit to the Asimov data and the fixed-POI fits to the data and to the
    Asimov data, each from two starts (the lower kept); returns the three, patch-major."""
    data, asimov, free_data, asimov_gen = fits
    B, M = model.batch_size, poi_values.shape[0]
    dev, poi = model.init.device, model.poi_index
    ar = torch.arange(B, device=dev)
    rep = ar.repeat_interleave(M)
    mu = poi_values.repeat(B)
    x_init = _with_poi(model.init[rep], poi[rep], mu)
    x_data = _with_poi(free_data.x[rep], poi[rep], mu)
    x_asimov = _with_poi(asimov_gen.x[rep], poi[rep], mu)
    idx3 = torch.cat([ar, rep, rep, rep, rep])
    data_rep, asimov_rep = data.take(rep), asimov.take(rep)
    fixed_free = _poi_fixed(model.free, poi)[rep]
    stage2 = minimize_chunked(
        model,
        Data.cat([asimov, data_rep, asimov_rep, data_rep, asimov_rep]),
        torch.cat([asimov_gen.x, x_data, x_asimov, x_init, x_init]),
        torch.cat([model.free, *[fixed_free] * 4]),
        chunk_size,
        items=idx3,
        **fit_kwargs,
    )
    n = B * M

    def part(k: int) -> FitResult:
        return stage2.take(torch.arange(B + k * n, B + (k + 1) * n, device=dev))

    return stage2.take(ar), select_lower(part(0), part(2)), select_lower(part(1), part(3))


def _cross_starts(
    model: BatchedModel,
    data: tuple[Data, Data, torch.Tensor],
    fixed_data: FitResult,
    fixed_asimov: FitResult,
    chunk_size: int,
    **fit_kwargs,
) -> tuple[FitResult, FitResult]:
    """Stage 2b: every fixed-POI fit starts once more from the other data set's fixed-POI
    minimum (the same POI value: a feasible point); the lower minimum is kept.

    Where the likelihood has several minima at the tested POI, the fits to the observed and
    to the Asimov data can end in different basins from the same two starts: on sbottom
    RegionA's ``sbottom_500_180_50`` both starts of the Asimov fit stop 0.0129 (in 2 NLL)
    above the minimum that the data fit's point leads to, and the expected CLs band was off
    by up to 7.6e-4. ``data`` holds the observed and Asimov data of every fixed-POI fit and
    the patch (item) of each.
    """
    data_rep, asimov_rep, rep = data
    n = rep.shape[0]
    fixed_free = _poi_fixed(model.free, model.poi_index)[rep]
    again = minimize_chunked(
        model,
        Data.cat([data_rep, asimov_rep]),
        torch.cat([fixed_asimov.x, fixed_data.x]),
        torch.cat([fixed_free, fixed_free]),
        chunk_size,
        items=torch.cat([rep, rep]),
        **fit_kwargs,
    )
    ar = torch.arange(n, device=rep.device)
    return select_lower(fixed_data, again.take(ar)), select_lower(fixed_asimov, again.take(ar + n))


def run_fits(
    model: BatchedModel,
    data: Data,
    poi_values: torch.Tensor,
    chunk_size: int = 2048,
    **fit_kwargs,
) -> HypotestFits:
    """All fits needed for the asymptotic CLs of every patch at every POI value.

    Likelihoods with one-sided or strongly asymmetric systematics can have several minima.
    So that the result does not depend on where a fit starts, every fixed-POI fit runs from
    two starting points (the model's initial values, as pyhf does, and the corresponding free
    fit with the POI set to its test value) and keeps the lower minimum; a free fit that a
    fixed-POI fit undercuts is restarted from that point.
    """
    ar = torch.arange(model.batch_size, device=model.init.device)
    rep = ar.repeat_interleave(poi_values.shape[0])
    free_data, asimov_gen = _first_fits(model, data, chunk_size, **fit_kwargs)
    asimov = model.expected_data(asimov_gen.x)
    free_asimov, fixed_data, fixed_asimov = _second_fits(
        model, (data, asimov, free_data, asimov_gen), poi_values, chunk_size, **fit_kwargs
    )
    fixed_data, fixed_asimov = _cross_starts(
        model,
        (data.take(rep), asimov.take(rep), rep),
        fixed_data,
        fixed_asimov,
        chunk_size,
        **fit_kwargs,
    )
    # stage 3: free fits undercut by a feasible point of another fit start again there
    free_data = _refit_from_better_points(
        model, data, free_data, [(asimov_gen, ar), (fixed_data, rep)], chunk_size, **fit_kwargs
    )
    free_asimov = _refit_from_better_points(
        model, asimov, free_asimov, [(fixed_asimov, rep)], chunk_size, **fit_kwargs
    )
    return HypotestFits(
        free_data=free_data,
        asimov_gen=asimov_gen,
        free_asimov=free_asimov,
        fixed_data=fixed_data,
        fixed_asimov=fixed_asimov,
    )


def _qmu(free: FitResult, fixed: FitResult, poi, mu: torch.Tensor, M: int) -> torch.Tensor:
    B = free.x.shape[0]
    rep = torch.arange(B, device=mu.device).repeat_interleave(M)
    # differences of the deviance form: accurate where the constants are huge (stiff terms)
    tmu = torch.clamp(fixed.deviance() - free.deviance()[rep], min=0.0)
    muhat = free.x[rep, poi[rep]]
    return torch.where(muhat > mu, torch.zeros_like(tmu), tmu).view(B, M)


def cls_from_q(
    qmu: torch.Tensor, qmu_asimov: torch.Tensor, test_stat: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Observed CLs and the expected band (``[..., 5]``) from the test statistics."""
    sq = torch.sqrt(qmu)
    sqa = torch.sqrt(qmu_asimov)
    if test_stat == "q":
        t = sq - sqa
    elif test_stat == "qtilde":
        t = torch.where(sq <= sqa, sq - sqa, (qmu - qmu_asimov) / (2 * sqa))
    else:
        raise ValueError(f"unsupported test statistic {test_stat!r}")
    ndtr = torch.special.ndtr
    cls_obs = ndtr(-(t + sqa)) / ndtr(-t)
    n = torch.tensor(N_SIGMA, dtype=qmu.dtype, device=qmu.device)
    cls_exp = ndtr(-(n + sqa.unsqueeze(-1))) / ndtr(-n)
    return cls_obs, cls_exp


def hypotest(
    model: BatchedModel,
    data: Data,
    poi_values: torch.Tensor,
    test_stat: str = "qtilde",
    chunk_size: int = 2048,
    **fit_kwargs,
) -> HypotestResult:
    """Batched ``pyhf.infer.hypotest`` (asymptotics) for every patch and POI value."""
    M = poi_values.shape[0]
    B = model.batch_size
    fits = run_fits(model, data, poi_values, chunk_size=chunk_size, **fit_kwargs)
    mu = poi_values.repeat(B)
    poi = model.poi_index
    qmu = _qmu(fits.free_data, fits.fixed_data, poi, mu, M)
    qmu_a = _qmu(fits.free_asimov, fits.fixed_asimov, poi, mu, M)
    cls_obs, cls_exp = cls_from_q(qmu, qmu_a, test_stat)
    converged = (
        fits.free_data.converged
        & fits.asimov_gen.converged
        & fits.free_asimov.converged
        & fits.fixed_data.converged.view(B, M).all(-1)
        & fits.fixed_asimov.converged.view(B, M).all(-1)
    )
    return HypotestResult(cls_obs, cls_exp, qmu, qmu_a, converged, fits)


def interpolate_limits(
    scan: np.ndarray, cls_obs: np.ndarray, cls_exp: np.ndarray, level: float = 0.05
) -> tuple[float, list[float]]:
    """Observed and expected upper limits from a CLs scan, as pyhf's ``linear_grid_scan``.

    ``cls_obs`` is ``[M]`` and ``cls_exp`` is ``[M, 5]`` for the ``M`` scan points.
    """
    curves = np.concatenate([np.asarray(cls_obs)[:, None], np.asarray(cls_exp)], axis=1).T
    limits = [float(np.interp(level, c[::-1], np.asarray(scan)[::-1])) for c in curves]
    return limits[0], limits[1:]
