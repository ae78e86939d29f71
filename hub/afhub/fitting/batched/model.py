"""The batched HistFactory model: many compiled models padded to common shapes, in torch.

For item ``b`` of the batch, cell ``c`` (channel, sample, bin) has the expected yield

    nu_c = A_c(theta) * exp(L_c(theta)) * G_c(theta)

with ``A_c = nom_c + sum_p code4p(theta_p; up_cp, dn_cp)`` (histosys), ``L_c`` the sum of the
logs of the code4 normsys factors, and ``G_c`` the product of the linear factors (normfactor,
shapefactor, lumi, staterror, shapesys). Bin yields sum their cells. The negative
log-likelihood is pyhf's: Poisson terms for the bins, Gaussian and (continuous) Poisson
constraint terms for the auxiliary data, constants included, so ``2 * nll`` equals pyhf's
``twice_nll``.

Every term depends on a parameter through one-dimensional functions, so the gradient and the
exact Hessian are assembled analytically with a few batched matrix products
(:meth:`BatchedModel.nll_grad_hess`), far cheaper than automatic differentiation over
all parameters.

Padding: parameters beyond an item's own are fixed at 0 and touch nothing; two extra slots
hold the constants 1 (index ``P``) and 0 (index ``P + 1``) that padded entries point to;
padded cells have zero yield; padded bins are masked out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch

from afhub.fitting.batched.interpolation import code4, code4_coefficients, code4p_weights
from afhub.fitting.batched.spec import CompiledModel

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def _u_minus_log1p(u: torch.Tensor) -> torch.Tensor:
    """``u - log(1 + u)`` without cancellation: its series ``sum (-u)^k / k`` for small ``u``."""
    small = u.abs() < 0.1
    us = torch.where(small, u, torch.zeros_like(u))
    series = torch.zeros_like(u)
    for k in range(18, 1, -1):  # u^2 (1/2 - u/3 + u^2/4 - ...), truncation below 1e-17
        series = series * (-us) + 1.0 / k
    series = series * us * us
    direct = u - torch.log1p(torch.where(small, torch.zeros_like(u), u))
    return torch.where(small, series, direct)


def _max_per_cell(cells: np.ndarray, n_cells: int) -> int:
    """The largest number of entries that share one cell."""
    return int(np.bincount(cells, minlength=n_cells).max(initial=0)) if len(cells) else 0


def _slots(cells: np.ndarray) -> np.ndarray:
    """For entries grouped by cell, the running index of each entry within its cell."""
    if len(cells) == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(cells, kind="stable")
    sorted_cells = cells[order]
    first = np.searchsorted(sorted_cells, sorted_cells, side="left")
    slots = np.empty_like(cells)
    slots[order] = np.arange(len(cells)) - first
    return slots


@dataclass
class Data:
    """Observed (or Asimov) data for a batch: main bins and auxiliary data."""

    main: torch.Tensor  # [B, N]
    aux_gauss: torch.Tensor  # [B, NG]
    aux_poisson: torch.Tensor  # [B, NQ]

    def take(self, idx: torch.Tensor) -> Data:
        return Data(self.main[idx], self.aux_gauss[idx], self.aux_poisson[idx])

    @staticmethod
    def cat(parts: list[Data]) -> Data:
        return Data(
            torch.cat([p.main for p in parts]),
            torch.cat([p.aux_gauss for p in parts]),
            torch.cat([p.aux_poisson for p in parts]),
        )


@dataclass
class BatchedModel:
    """Padded tensors of a batch of models (build with :meth:`from_compiled`)."""

    n_pars: int  # P (padded)
    nominal: torch.Tensor  # [B, C]
    bin_onehot: torch.Tensor  # [B, N, C]
    bin_mask: torch.Tensor  # [B, N] float
    cell_h_par: torch.Tensor  # [B, C, KH] long: the histosys parameters of each cell
    cell_h_up: torch.Tensor  # [B, C, KH]: their deltas up (hi - nom)
    cell_h_dn: torch.Tensor  # [B, C, KH]: and down (nom - lo)
    ns_par: torch.Tensor  # [B, E] long (into P + 2)
    ns_log_hi: torch.Tensor  # [B, E]
    ns_log_lo: torch.Tensor  # [B, E]
    ns_coef: torch.Tensor  # [B, E, 6] (entry E - 1 is padding: the factor 1)
    cell_ns: torch.Tensor  # [B, C, KN] long: the normsys entries of each cell
    cell_ns_par: torch.Tensor  # [B, C, KN] long: their parameters (into P + 2)
    f_par: torch.Tensor  # [B, C, K] long (into P + 2)
    g_par: torch.Tensor  # [B, NG] long
    g_sigma: torch.Tensor  # [B, NG]
    g_mask: torch.Tensor  # [B, NG]
    q_par: torch.Tensor  # [B, NQ] long
    q_tau: torch.Tensor  # [B, NQ]
    q_mask: torch.Tensor  # [B, NQ]
    init: torch.Tensor  # [B, P]
    lower: torch.Tensor  # [B, P]
    upper: torch.Tensor  # [B, P]
    free: torch.Tensor  # [B, P] bool
    poi_index: torch.Tensor  # [B] long
    #: ``[B, C, 2P]``: the histosys deltas up and down of every cell as dense matrices over the
    #: parameters, kept (besides the per-cell entries) where the histosys is dense enough that
    #: batched matrix products beat gathering the entries (sbottom: 52 of 64 per cell)
    h_dense: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.nominal.shape[0]

    def bytes_per_fit(self) -> int:
        """An upper estimate of the memory one fit of this batch needs while it is iterated.

        The largest tensors of :meth:`nll_grad_hess` are ``[C, P]`` per item (the cell
        derivatives, about 16 of them alive at once), ``[P, P]`` (Hessian, its factor and the
        products, about 12), ``[C, K, K, K]`` for the products of the linear factors, plus the
        item's share of the model itself. Used to choose chunk sizes from a memory budget.
        """
        P = self.n_pars + 2
        _, N, C = self.bin_onehot.shape
        K = self.f_par.shape[-1]
        KN = self.cell_ns.shape[-1]
        E = self.ns_coef.shape[1]
        floats = 16 * C * P + 12 * P * P + 4 * C * K**3 + 6 * C * KN + N * C + 10 * E
        if self.h_dense is not None:
            floats += 2 * C * P
        return 8 * floats

    def take(self, idx: torch.Tensor) -> BatchedModel:
        """The sub-batch of items ``idx``."""
        values = {}
        for f in fields(self):
            v = getattr(self, f.name)
            values[f.name] = v[idx] if isinstance(v, torch.Tensor) else v
        return BatchedModel(**values)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_compiled(
        cls,
        models: list[CompiledModel],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> tuple[BatchedModel, Data]:
        """Pad and stack compiled models; returns the model and the observed data."""
        B = len(models)
        P = max(m.n_pars for m in models)
        C = max(m.n_cells for m in models)
        N = max(m.n_bins for m in models)
        ONE, ZERO = P, P + 1

        E = max([0] + [len(m.ns_par) for m in models]) + 1  # the last entry pads
        KN = max([1] + [_max_per_cell(m.ns_map_cell, m.n_cells) for m in models])
        KH = max([1] + [_max_per_cell(m.histo_cell, m.n_cells) for m in models])
        K = max([1] + [_max_per_cell(m.f_cell, m.n_cells) for m in models])
        NG = max([1] + [len(m.gauss_par) for m in models])
        NQ = max([1] + [len(m.pois_par) for m in models])

        nominal = np.zeros((B, C))
        onehot = np.zeros((B, N, C))
        bin_mask = np.zeros((B, N))
        observed = np.zeros((B, N))
        cell_h_par = np.full((B, C, KH), ZERO, dtype=np.int64)
        cell_h_up = np.zeros((B, C, KH))
        cell_h_dn = np.zeros((B, C, KH))
        ns_par = np.full((B, E), ZERO, dtype=np.int64)
        ns_hi = np.ones((B, E))
        ns_lo = np.ones((B, E))
        cell_ns = np.full((B, C, KN), E - 1, dtype=np.int64)
        f_par = np.full((B, C, K), ONE, dtype=np.int64)
        g_par = np.full((B, NG), ZERO, dtype=np.int64)
        g_aux = np.zeros((B, NG))
        g_sigma = np.ones((B, NG))
        g_mask = np.zeros((B, NG))
        q_par = np.full((B, NQ), ONE, dtype=np.int64)
        q_aux = np.ones((B, NQ))
        q_tau = np.ones((B, NQ))
        q_mask = np.zeros((B, NQ))
        init = np.zeros((B, P))
        lower = np.zeros((B, P))
        upper = np.zeros((B, P))
        free = np.zeros((B, P), dtype=bool)
        poi = np.zeros(B, dtype=np.int64)

        for b, m in enumerate(models):
            nc, nb, npar = m.n_cells, m.n_bins, m.n_pars
            nominal[b, :nc] = m.nominal
            onehot[b, m.cell_bin, np.arange(nc)] = 1.0
            bin_mask[b, :nb] = 1.0
            observed[b, :nb] = m.observed
            hs = _slots(m.histo_cell)
            cell_h_par[b, m.histo_cell, hs] = m.histo_par
            cell_h_up[b, m.histo_cell, hs] = m.histo_up
            cell_h_dn[b, m.histo_cell, hs] = m.histo_dn
            ne = len(m.ns_par)
            ns_par[b, :ne], ns_hi[b, :ne], ns_lo[b, :ne] = m.ns_par, m.ns_hi, m.ns_lo
            cell_ns[b, m.ns_map_cell, _slots(m.ns_map_cell)] = m.ns_map_entry
            f_par[b, m.f_cell, _slots(m.f_cell)] = m.f_par
            ng, nq = len(m.gauss_par), len(m.pois_par)
            g_par[b, :ng], g_aux[b, :ng], g_sigma[b, :ng] = (
                m.gauss_par,
                m.gauss_aux,
                m.gauss_sigma,
            )
            g_mask[b, :ng] = 1.0
            q_par[b, :nq], q_aux[b, :nq], q_tau[b, :nq] = m.pois_par, m.pois_aux, m.pois_tau
            q_mask[b, :nq] = 1.0
            init[b, :npar] = m.init
            lower[b, :npar] = m.lower
            upper[b, :npar] = m.upper
            free[b, :npar] = ~m.fixed
            poi[b] = m.poi_index

        h_dense = None
        if 2 * KH >= P:  # dense enough: [C, 2P] costs at most 4 / 3 of the [C, KH] entries
            h_dense = np.zeros((B, C, 2 * (P + 2)))
            rows = np.arange(B)[:, None, None]
            cols = np.arange(C)[None, :, None]
            np.add.at(h_dense, (rows, cols, cell_h_par), cell_h_up)
            np.add.at(h_dense, (rows, cols, cell_h_par + P + 2), cell_h_dn)
            h_dense = np.concatenate([h_dense[..., :P], h_dense[..., P + 2 : 2 * P + 2]], -1)

        def t(x, dt=dtype):
            return torch.as_tensor(x, dtype=dt, device=device)

        model = cls(
            n_pars=P,
            nominal=t(nominal),
            bin_onehot=t(onehot),
            bin_mask=t(bin_mask),
            cell_h_par=t(cell_h_par, torch.long),
            cell_h_up=t(cell_h_up),
            cell_h_dn=t(cell_h_dn),
            ns_par=t(ns_par, torch.long),
            ns_log_hi=t(np.log(ns_hi)),
            ns_log_lo=t(np.log(ns_lo)),
            ns_coef=t(code4_coefficients(ns_hi, ns_lo)),
            cell_ns=t(cell_ns, torch.long),
            cell_ns_par=t(
                np.take_along_axis(ns_par, cell_ns.reshape(B, -1), 1).reshape(cell_ns.shape),
                torch.long,
            ),
            f_par=t(f_par, torch.long),
            g_par=t(g_par, torch.long),
            g_sigma=t(g_sigma),
            g_mask=t(g_mask),
            q_par=t(q_par, torch.long),
            q_tau=t(q_tau),
            q_mask=t(q_mask),
            init=t(init),
            lower=t(lower),
            upper=t(upper),
            free=t(free, torch.bool),
            poi_index=t(poi, torch.long),
            h_dense=None if h_dense is None else t(h_dense),
        )
        data = Data(t(observed), t(g_aux), t(q_aux))
        return model, data

    # ------------------------------------------------------------------ evaluation
    def _extend(self, x: torch.Tensor) -> torch.Tensor:
        B = x.shape[0]
        consts = torch.tensor([1.0, 0.0], dtype=x.dtype, device=x.device).expand(B, 2)
        return torch.cat([x, consts], dim=1)

    def _gather(self, xe: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        B = xe.shape[0]
        return xe.gather(1, idx.reshape(B, -1)).reshape(idx.shape)

    def cell_yields(self, x: torch.Tensor) -> torch.Tensor:
        """Expected yield of every cell, ``[B, C]``."""
        xe = self._extend(x)
        a = self._histo_yields(x)
        alpha = self._gather(xe, self.ns_par)
        l0, _, _, neg = code4(alpha, self.ns_log_hi, self.ns_log_lo, self.ns_coef)
        g = self._gather(xe, self.f_par).prod(-1)
        return a * self._signed_exp(l0, neg) * g

    def _histo_yields(self, x: torch.Tensor) -> torch.Tensor:
        """``A_c``: nominal yields plus the histosys shifts, ``[B, C]``."""
        if self.h_dense is not None:
            w = torch.cat(code4p_weights(x, 2), -1).unsqueeze(-1)
            return self.nominal + (self.h_dense @ w)[..., 0]
        w_up, w_dn = self._histo_weights(x, 2)
        return self.nominal + (self.cell_h_up * w_up + self.cell_h_dn * w_dn).sum(-1)

    def _per_cell(self, per_entry: torch.Tensor) -> torch.Tensor:
        """``[B, C, KN]``: a per-normsys-entry quantity ``[B, E]`` at the entries of each cell."""
        return self._gather(per_entry, self.cell_ns)

    def _signed_exp(self, l0: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """Product of the normsys factors of every cell from ``log|f|`` and ``f < 0``."""
        log_e = self._per_cell(l0).sum(-1)
        if not bool(neg.any()):
            return torch.exp(log_e)
        n_neg = self._per_cell(neg.to(l0.dtype)).sum(-1)
        sign = 1 - 2 * torch.remainder(n_neg, 2)
        return sign * torch.exp(log_e)

    def _histo_weights(self, x: torch.Tensor, n: int) -> list[torch.Tensor]:
        """The first ``n`` code4p weights of every parameter, at each cell's histosys entries."""
        zeros = torch.zeros(x.shape[0], 2, dtype=x.dtype, device=x.device)
        return [
            self._gather(torch.cat([w, zeros], 1), self.cell_h_par) for w in code4p_weights(x, n)
        ]

    @staticmethod
    def _scatter_cells(par: torch.Tensor, values: torch.Tensor, P: int) -> torch.Tensor:
        """``[B, C, P]``: per cell, ``values`` (``[B, C, K]``) summed into their parameters."""
        B, C, _ = par.shape
        out = torch.zeros(B, C, P + 2, dtype=values.dtype, device=values.device)
        out.scatter_add_(2, par, values)
        return out[..., :P]

    def _per_cell_par(self, per_entry: torch.Tensor, P: int) -> torch.Tensor:
        """``[B, C, P]``: per cell and parameter, the sum of ``per_entry`` over its entries."""
        B, C, _ = self.cell_ns.shape
        out = torch.zeros(B, C, P + 2, dtype=per_entry.dtype, device=per_entry.device)
        out.scatter_add_(2, self.cell_ns_par, self._per_cell(per_entry))
        return out[..., :P]

    def expected_main(self, x: torch.Tensor) -> torch.Tensor:
        """Expected bin yields ``[B, N]`` (padded bins are 0)."""
        return (self.bin_onehot @ self.cell_yields(x).unsqueeze(-1))[..., 0]

    def expected_data(self, x: torch.Tensor) -> Data:
        """pyhf's ``expected_data`` (main and auxiliary), used to build Asimov data."""
        xe = self._extend(x)
        aux_g = self._gather(xe, self.g_par)
        aux_q = self._gather(xe, self.q_par) * self.q_tau
        return Data(self.expected_main(x), aux_g, aux_q)

    def nll(self, x: torch.Tensor, data: Data) -> torch.Tensor:
        """Negative log-likelihood per item, ``[B]`` (pyhf's ``-logpdf``, constants included).

        Evaluated as :meth:`nll_deviance` plus :meth:`nll_constant`: the same value as pyhf's,
        with the same float64 rounding of the large constants, so use it for reporting and
        compare minima with :meth:`nll_deviance`.
        """
        return self.nll_deviance(x, data) + self.nll_constant(data)

    def nll_deviance(self, x: torch.Tensor, data: Data) -> torch.Tensor:
        """The NLL without its data-only constants, accurate for differences, ``[B]``.

        Every term is written relative to its own minimum over the expectation, so that no
        large constant cancels: a Poisson term ``nu - n ln nu + ln n!`` becomes
        ``n (u - ln(1 + u))`` with ``u = nu / n - 1`` (``nu`` where ``n = 0``), a Poisson
        constraint with ``tau`` up to 1e12 becomes ``a (u - ln(1 + u))`` with
        ``u = gamma tau / a - 1`` (``gamma - 1`` at the nominal auxiliary data ``a = tau``),
        a Gaussian constraint ``((a - theta) / sigma)^2 / 2``. ``u - ln(1 + u)`` is summed as
        its series for small ``u``. Differences of this function between two points (same
        data) equal differences of :meth:`nll` exactly, but are accurate to about 1e-15
        relative to the deviance itself (pyhf's ``twice_nll`` carries rounding of the
        constants: about 1e-3 for ``tau`` near 1e11).
        """
        return self._deviance_from_nu(x, self.expected_main(x), data)

    def nll_constant(self, data: Data) -> torch.Tensor:
        """``nll - nll_deviance``: the part of the NLL that depends on the data only, ``[B]``."""
        mask = self.bin_mask
        n = data.main
        main = mask * (n - torch.xlogy(n, n) + torch.lgamma(n + 1))
        gauss = self.g_mask * (torch.log(self.g_sigma) + _LOG_SQRT_2PI)
        a = data.aux_poisson
        pois = self.q_mask * (a - torch.xlogy(a, a) + torch.lgamma(a + 1))
        return main.sum(-1) + gauss.sum(-1) + pois.sum(-1)

    def _deviance_from_nu(self, x: torch.Tensor, nu: torch.Tensor, data: Data) -> torch.Tensor:
        xe = self._extend(x)
        mask = self.bin_mask
        n = data.main
        n_s = torch.where(n > 0, n, torch.ones_like(n))
        main = torch.where(n > 0, n * _u_minus_log1p((nu - n) / n_s), nu)
        main = torch.where(mask > 0, main, torch.zeros_like(main))
        th_g = self._gather(xe, self.g_par)
        gauss = self.g_mask * 0.5 * ((data.aux_gauss - th_g) / self.g_sigma) ** 2
        gam = self._gather(xe, self.q_par)
        a = data.aux_poisson
        a_s = torch.where(a > 0, a, torch.ones_like(a))
        pois = torch.where(
            a > 0, a * _u_minus_log1p(gam * (self.q_tau / a_s) - 1), gam * self.q_tau
        )
        pois = self.q_mask * pois
        out = main.sum(-1) + gauss.sum(-1) + pois.sum(-1)
        # pyhf's Poisson term is finite for nu <= 0 only where n = 0 (it is nu there)
        bad = ((nu <= 0) & (mask > 0) & (n > 0)).any(-1) | ~torch.isfinite(out)
        return torch.where(bad, torch.full_like(out, math.inf), out)

    def nll_grad_hess(
        self,
        x: torch.Tensor,
        data: Data,
        hessian: bool = True,
        deviance: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """NLL ``[B]``, its gradient ``[B, P]`` and exact Hessian ``[B, P, P]``.

        With ``deviance=True`` the value is :meth:`nll_deviance` (what the optimiser uses).
        """
        B, P = x.shape
        P2 = P + 2
        C = self.nominal.shape[1]
        xe = self._extend(x)
        # histosys (additive)
        dense = self.h_dense is not None
        if dense:
            hw = code4p_weights(x)
            a = self.nominal + (self.h_dense @ torch.cat(hw[:2], -1).unsqueeze(-1))[..., 0]
            h_up, h_dn = self.h_dense[..., :P], self.h_dense[..., P:]
            a_p = h_up * hw[2].unsqueeze(1) + h_dn * hw[3].unsqueeze(1)  # [B,C,P]
        else:
            w_up, w_dn, dw_up, dw_dn, d2w_up, d2w_dn = self._histo_weights(x, 6)
            a = self.nominal + (self.cell_h_up * w_up + self.cell_h_dn * w_dn).sum(-1)
            a_p = self._scatter_cells(
                self.cell_h_par, self.cell_h_up * dw_up + self.cell_h_dn * dw_dn, P
            )  # [B,C,P]
        # normsys (log-additive)
        alpha = self._gather(xe, self.ns_par)
        l0, l1, l2, neg = code4(alpha, self.ns_log_hi, self.ns_log_lo, self.ns_coef)
        l_p = self._per_cell_par(l1, P)  # [B,C,P]
        e = self._signed_exp(l0, neg)
        # linear factors
        theta = self._gather(xe, self.f_par)  # [B,C,K]
        K = theta.shape[-1]
        ones = torch.ones_like(theta[..., :1])
        prefix = torch.cumprod(torch.cat([ones, theta[..., :-1]], -1), -1)
        suffix = torch.cumprod(torch.cat([ones, theta.flip(-1)[..., :-1]], -1), -1).flip(-1)
        excl = prefix * suffix  # prod over k' != k
        g = prefix[..., -1] * theta[..., -1]
        g_p = torch.zeros(B, C, P2, dtype=x.dtype, device=x.device)
        g_p.scatter_add_(2, self.f_par, excl)
        g_p = g_p[..., :P]
        # yields and their gradients
        # dnu_c = e (a_p g + a g_p + b l_p), accumulated in place (three passes over [B,C,P])
        b = a * g
        nu_c = b * e
        dnu_c = a_p * (g * e).unsqueeze(-1)
        dnu_c.addcmul_(g_p, (a * e).unsqueeze(-1))
        dnu_c.addcmul_(l_p, nu_c.unsqueeze(-1))  # [B,C,P]
        nu = (self.bin_onehot @ nu_c.unsqueeze(-1))[..., 0]
        jac = self.bin_onehot @ dnu_c  # [B,N,P]
        value = self._deviance_from_nu(x, nu, data)
        if not deviance:
            value = value + self.nll_constant(data)

        mask = self.bin_mask
        n = data.main
        nu_s = torch.where((mask > 0) & (n > 0), nu, torch.ones_like(nu))
        w = mask * (1 - n / nu_s)  # d nll / d nu
        grad = (w.unsqueeze(1) @ jac)[:, 0, :]
        # constraints
        th_g = self._gather(xe, self.g_par)
        inv_var = self.g_mask / self.g_sigma**2
        cg = torch.zeros(B, P2, dtype=x.dtype, device=x.device)
        cg.scatter_add_(1, self.g_par, inv_var * (th_g - data.aux_gauss))
        gam = self._gather(xe, self.q_par)
        aux_q = data.aux_poisson
        # tau - a / gamma, written as a u / gamma (u as in nll_deviance): accurate for tau 1e12
        aux_s = torch.where(aux_q > 0, aux_q, torch.ones_like(aux_q))
        u = gam * (self.q_tau / aux_s) - 1
        cg.scatter_add_(
            1, self.q_par, self.q_mask * torch.where(aux_q > 0, aux_s * u / gam, self.q_tau)
        )
        grad = grad + cg[:, :P]
        if not hessian:
            return value, grad, None

        # Hessian: J^T diag(n / nu^2) J + sum_c omega_c Hess(nu_c) + constraints
        hess = jac.transpose(1, 2) @ ((mask * n / nu_s**2).unsqueeze(-1) * jac)
        omega = (w.unsqueeze(1) @ self.bin_onehot)[:, 0, :]  # [B,C]
        oe = (omega * e).unsqueeze(-1)
        # cross terms between the histosys, normsys and linear-factor parts:
        # sum_c oe [a_p g_q + b_p L_q + b L_p L_q / 2] + transpose, as one matrix product;
        # oe (b_p + b L_p / 2) = omega (dnu_c - nu_c L_p / 2) with b_p = a_p g + a g_p
        om_dnu = dnu_c * omega.unsqueeze(-1)
        om_dnu.addcmul_(l_p, (-0.5 * omega * nu_c).unsqueeze(-1))
        cross = torch.baddbmm((oe * a_p).transpose(1, 2) @ g_p, om_dnu.transpose(1, 2), l_p)
        hess = hess + cross + cross.transpose(1, 2)
        # diagonal second derivatives of the one-dimensional functions
        # sum_c oe_c (g_c A_c'' + b_c L_c''), straight from the cells' own entries
        l2c = self._per_cell(l2) * (oe * b.unsqueeze(-1))
        dg = torch.zeros(B, P2, dtype=x.dtype, device=x.device)
        if dense:
            ogh = ((oe[..., 0] * g).unsqueeze(1) @ self.h_dense)[:, 0, :]  # [B,2P]
            dg[:, :P] = ogh[:, :P] * hw[4] + ogh[:, P:] * hw[5]
        else:
            a2 = (self.cell_h_up * d2w_up + self.cell_h_dn * d2w_dn) * (oe * g.unsqueeze(-1))
            dg.scatter_add_(1, self.cell_h_par.reshape(B, -1), a2.reshape(B, -1))
        dg.scatter_add_(1, self.cell_ns_par.reshape(B, -1), l2c.reshape(B, -1))
        diag = dg[:, :P]
        # second derivatives of the linear-factor products (k != k')
        if K > 1:
            eye = torch.eye(K, dtype=torch.bool, device=x.device)
            kk = ~eye  # pairs k != k'
            th = theta.unsqueeze(-2).unsqueeze(-2).expand(B, C, K, K, K)
            drop = eye.view(K, 1, K) | eye.view(1, K, K)  # m == k or m == k'
            z = torch.where(drop, torch.ones_like(th), th).prod(-1)  # [B,C,K,K]
            z = z * kk * (oe[..., 0] * a).unsqueeze(-1).unsqueeze(-1)
            idx = self.f_par.unsqueeze(-1) * P2 + self.f_par.unsqueeze(-2)
            flat = torch.zeros(B, P2 * P2, dtype=x.dtype, device=x.device)
            flat.scatter_add_(1, idx.reshape(B, -1), z.reshape(B, -1))
            hess = hess + flat.view(B, P2, P2)[:, :P, :P]
        cd = torch.zeros(B, P2, dtype=x.dtype, device=x.device)
        cd.scatter_add_(1, self.g_par, inv_var)
        cd.scatter_add_(1, self.q_par, self.q_mask * aux_q / gam**2)
        diag = diag + cd[:, :P]
        hess = hess + torch.diag_embed(diag)
        return value, grad, hess
