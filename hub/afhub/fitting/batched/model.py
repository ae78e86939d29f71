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
from typing import Any

import numpy as np
import torch

from afhub.fitting.batched.interpolation import code4, code4_coefficients, code4p_weights
from afhub.fitting.batched.padding import (
    PadShape,
    dense_histosys,
    factor_columns,
    fill_item,
    padded_arrays,
)
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
    #: the histosys parameters of each cell (KH = 0 where ``h_dense`` holds the histosys)
    cell_h_par: torch.Tensor  # [B, C, KH] long
    cell_h_up: torch.Tensor  # [B, C, KH]: their deltas up (hi - nom)
    cell_h_dn: torch.Tensor  # [B, C, KH]: and down (nom - lo)
    ns_par: torch.Tensor  # [B, E] long (into P + 2)
    ns_log_hi: torch.Tensor  # [B, E]
    ns_log_lo: torch.Tensor  # [B, E]
    ns_coef: torch.Tensor  # [B, E, 6] (entry E - 1 is padding: the factor 1)
    cell_ns: torch.Tensor  # [B, C, KN] long: the normsys entries of each cell
    cell_ns_par: torch.Tensor  # [B, C, KN] long: their parameters (into P + 2)
    f_par: torch.Tensor  # [B, C, K] long (into P + 2)
    #: the F parameters that are linear factors in any item (every row the same), and
    #: ``f_par`` renumbered into them (F for padding): the factors' derivatives are [C, F]
    f_cols: torch.Tensor  # [B, F] long
    f_par_c: torch.Tensor  # [B, C, K] long (into F + 1)
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
        values: dict[str, Any] = {}
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
        shape = PadShape.of(models)
        arr = padded_arrays(shape)
        for b, m in enumerate(models):
            fill_item(arr, b, m)
        h_dense = dense_histosys(arr, shape)
        if h_dense is not None:  # the dense matrices replace the per-cell entries
            for name in ("cell_h_par", "cell_h_up", "cell_h_dn"):
                arr[name] = arr[name][..., :0]

        def t(x: np.ndarray, dt: torch.dtype = dtype) -> torch.Tensor:
            return torch.as_tensor(x, dtype=dt, device=device)

        B, ns_par, cell_ns = shape.B, arr["ns_par"], arr["cell_ns"]
        arr["f_cols"], arr["f_par_c"] = factor_columns(arr["f_par"], shape.P)
        longs = ("cell_h_par", "ns_par", "cell_ns", "f_par", "f_cols", "f_par_c", "g_par", "q_par")
        floats = ("nominal", "bin_mask", "cell_h_up", "cell_h_dn", "g_sigma", "g_mask")
        tensors: dict[str, Any] = {name: t(arr[name], torch.long) for name in longs}
        tensors.update({name: t(arr[name]) for name in floats})
        model = cls(
            n_pars=shape.P,
            bin_onehot=t(arr["onehot"]),
            ns_log_hi=t(np.log(arr["ns_hi"])),
            ns_log_lo=t(np.log(arr["ns_lo"])),
            ns_coef=t(code4_coefficients(arr["ns_hi"], arr["ns_lo"])),
            cell_ns_par=t(
                np.take_along_axis(ns_par, cell_ns.reshape(B, -1), 1).reshape(cell_ns.shape),
                torch.long,
            ),
            q_tau=t(arr["q_tau"]),
            q_mask=t(arr["q_mask"]),
            init=t(arr["init"]),
            lower=t(arr["lower"]),
            upper=t(arr["upper"]),
            free=t(arr["free"], torch.bool),
            poi_index=t(arr["poi"], torch.long),
            h_dense=None if h_dense is None else t(h_dense),
            **tensors,
        )
        data = Data(t(arr["observed"]), t(arr["g_aux"]), t(arr["q_aux"]))
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
        d = self._cell_derivatives(x)
        nu = (self.bin_onehot @ d.nu_c.unsqueeze(-1))[..., 0]
        jac = self.bin_onehot @ d.dnu_c  # [B,N,P]
        value = self._deviance_from_nu(x, nu, data)
        if not deviance:
            value = value + self.nll_constant(data)
        mask = self.bin_mask
        n = data.main
        nu_s = torch.where((mask > 0) & (n > 0), nu, torch.ones_like(nu))
        w = mask * (1 - n / nu_s)  # d nll / d nu
        cons = self._constraint_terms(x, data)
        grad = (w.unsqueeze(1) @ jac)[:, 0, :] + cons.grad
        if not hessian:
            return value, grad, None
        # Hessian: J^T diag(n / nu^2) J + sum_c omega_c Hess(nu_c) + constraints, assembled
        # in place in one [B, P, P] tensor (plus one for its symmetric half)
        omega = (w.unsqueeze(1) @ self.bin_onehot)[:, 0, :]  # [B,C]
        half = jac.transpose(1, 2) @ ((mask * n / nu_s**2).unsqueeze(-1) * jac)
        hess = self._cell_hessian(half, d, omega)
        hess.diagonal(dim1=-2, dim2=-1).add_(self._diagonal(d, omega) + cons.diag)
        return value, grad, hess

    def factor_columns(self) -> torch.Tensor:
        """The parameters that are linear factors in any item of the batch, ``[F]``."""
        if self.f_cols.shape[0]:
            return self.f_cols[0]
        return self.f_cols.new_zeros(self.f_cols.shape[1])

    def _cell_derivatives(self, x: torch.Tensor) -> _CellDerivatives:
        """Cell yields and their first derivatives, from the three kinds of modifiers."""
        B, P = x.shape
        C = self.nominal.shape[1]
        xe = self._extend(x)
        # histosys (additive)
        hw: list[torch.Tensor] = []
        if self.h_dense is not None:
            hw = list(code4p_weights(x))
            a = self.nominal + (self.h_dense @ torch.cat(hw[:2], -1).unsqueeze(-1))[..., 0]
            h_up, h_dn = self.h_dense[..., :P], self.h_dense[..., P:]
            a_p = h_up * hw[2].unsqueeze(1) + h_dn * hw[3].unsqueeze(1)  # [B,C,P]
        else:
            w_up, w_dn, dw_up, dw_dn, *hw = self._histo_weights(x, 6)
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
        ones = torch.ones_like(theta[..., :1])
        prefix = torch.cumprod(torch.cat([ones, theta[..., :-1]], -1), -1)
        suffix = torch.cumprod(torch.cat([ones, theta.flip(-1)[..., :-1]], -1), -1).flip(-1)
        g = prefix[..., -1] * theta[..., -1]
        F = self.f_cols.shape[1]
        g_p = torch.zeros(B, C, F + 1, dtype=x.dtype, device=x.device)
        g_p.scatter_add_(2, self.f_par_c, prefix * suffix)  # prod over k' != k
        g_p = g_p[..., :F]  # [B,C,F]: columns self.factor_columns()
        # dnu_c = e (a_p g + a g_p + b l_p), accumulated in place
        nu_c = a * g * e
        dnu_c = a_p * (g * e).unsqueeze(-1)
        dnu_c.index_add_(2, self.factor_columns(), g_p * (a * e).unsqueeze(-1))
        dnu_c.addcmul_(l_p, nu_c.unsqueeze(-1))  # [B,C,P]
        return _CellDerivatives(a, a_p, hw, l2, l_p, e, theta, g, g_p, nu_c, dnu_c)

    def _constraint_terms(self, x: torch.Tensor, data: Data) -> _ConstraintTerms:
        """Gradient and (diagonal) Hessian of the Gaussian and Poisson constraint terms."""
        B, P = x.shape
        xe = self._extend(x)
        th_g = self._gather(xe, self.g_par)
        inv_var = self.g_mask / self.g_sigma**2
        cg = torch.zeros(B, P + 2, dtype=x.dtype, device=x.device)
        cg.scatter_add_(1, self.g_par, inv_var * (th_g - data.aux_gauss))
        gam = self._gather(xe, self.q_par)
        aux_q = data.aux_poisson
        # tau - a / gamma, written as a u / gamma (u as in nll_deviance): accurate for tau 1e12
        aux_s = torch.where(aux_q > 0, aux_q, torch.ones_like(aux_q))
        u = gam * (self.q_tau / aux_s) - 1
        cg.scatter_add_(
            1, self.q_par, self.q_mask * torch.where(aux_q > 0, aux_s * u / gam, self.q_tau)
        )
        cd = torch.zeros(B, P + 2, dtype=x.dtype, device=x.device)
        cd.scatter_add_(1, self.g_par, inv_var)
        cd.scatter_add_(1, self.q_par, self.q_mask * aux_q / gam**2)
        return _ConstraintTerms(cg[:, :P], cd[:, :P])

    def _cell_hessian(
        self, fisher: torch.Tensor, d: _CellDerivatives, omega: torch.Tensor
    ) -> torch.Tensor:
        """``fisher + sum_c omega_c Hess(nu_c)`` without the diagonal one-dimensional terms.

        ``fisher`` (symmetric, ``[B, P, P]``) is overwritten: it holds the symmetric half.
        """
        oe = (omega * d.e).unsqueeze(-1)
        # cross terms between the histosys, normsys and linear-factor parts:
        # sum_c oe [a_p g_q + b_p L_q + b L_p L_q / 2] + transpose, as matrix products added
        # to half of the Fisher term; oe (b_p + b L_p / 2) = omega (dnu_c - nu_c L_p / 2)
        # with b_p = a_p g + a g_p (g_p only on the factor columns)
        om_dnu = d.dnu_c * omega.unsqueeze(-1)
        om_dnu.addcmul_(d.l_p, (-0.5 * omega * d.nu_c).unsqueeze(-1))
        half = fisher.baddbmm_(om_dnu.transpose(1, 2), d.l_p, beta=0.5)
        half.index_add_(2, self.factor_columns(), (oe * d.a_p).transpose(1, 2) @ d.g_p)
        hess = half + half.transpose(1, 2)
        if d.theta.shape[-1] > 1:
            self._add_factor_pairs(hess, d.theta, oe[..., 0] * d.a)
        return hess

    def _add_factor_pairs(
        self, hess: torch.Tensor, theta: torch.Tensor, weight: torch.Tensor
    ) -> None:
        """Add the second derivatives of the linear-factor products (k != k'), weighted per
        cell, to ``hess`` (``[B, P, P]``, contiguous) in place."""
        B, C, K = theta.shape
        P = hess.shape[-1]
        eye = torch.eye(K, dtype=torch.bool, device=theta.device)
        th = theta.unsqueeze(-2).unsqueeze(-2).expand(B, C, K, K, K)
        drop = eye.view(K, 1, K) | eye.view(1, K, K)  # m == k or m == k'
        z = torch.where(drop, torch.ones_like(th), th).prod(-1)  # [B,C,K,K]
        # pairs with a padding slot (the constants at P and P + 1) add nothing
        real = self.f_par < P
        keep = ~eye & real.unsqueeze(-1) & real.unsqueeze(-2)
        z = z * keep * weight.unsqueeze(-1).unsqueeze(-1)
        idx = torch.where(keep, self.f_par.unsqueeze(-1) * P + self.f_par.unsqueeze(-2), 0)
        hess.view(B, P * P).scatter_add_(1, idx.reshape(B, -1), z.reshape(B, -1))

    def _diagonal(self, d: _CellDerivatives, omega: torch.Tensor) -> torch.Tensor:
        """The diagonal second derivatives of the one-dimensional functions, ``[B, P]``:
        ``sum_c oe_c (g_c A_c'' + b_c L_c'')``, straight from the cells' own entries."""
        B, P = d.a_p.shape[0], d.a_p.shape[-1]
        oe = (omega * d.e).unsqueeze(-1)
        l2c = self._per_cell(d.l2) * (oe * (d.a * d.g).unsqueeze(-1))
        dg = torch.zeros(B, P + 2, dtype=omega.dtype, device=omega.device)
        if self.h_dense is not None:
            ogh = ((oe[..., 0] * d.g).unsqueeze(1) @ self.h_dense)[:, 0, :]  # [B,2P]
            dg[:, :P] = ogh[:, :P] * d.hw[4] + ogh[:, P:] * d.hw[5]
        else:
            d2w_up, d2w_dn = d.hw
            a2 = (self.cell_h_up * d2w_up + self.cell_h_dn * d2w_dn) * (oe * d.g.unsqueeze(-1))
            dg.scatter_add_(1, self.cell_h_par.reshape(B, -1), a2.reshape(B, -1))
        dg.scatter_add_(1, self.cell_ns_par.reshape(B, -1), l2c.reshape(B, -1))
        return dg[:, :P]


@dataclass
class _CellDerivatives:
    """What :meth:`BatchedModel.nll_grad_hess` needs of the cells (``[B, C]`` or
    ``[B, C, P]``): histosys sums ``a`` and derivatives ``a_p``, the code4p weights ``hw``
    left for the diagonal (all six when dense, else the two second-derivative ones at the
    entries), normsys second derivatives ``l2`` (per entry) and ``l_p``, the normsys product
    ``e``, the linear factors ``theta`` with product ``g`` and derivatives ``g_p`` (``[B, C, F]``,
    columns :meth:`BatchedModel.factor_columns`), the
    yields ``nu_c`` and their gradients ``dnu_c``."""

    a: torch.Tensor
    a_p: torch.Tensor
    hw: list[torch.Tensor]
    l2: torch.Tensor
    l_p: torch.Tensor
    e: torch.Tensor
    theta: torch.Tensor
    g: torch.Tensor
    g_p: torch.Tensor
    nu_c: torch.Tensor
    dnu_c: torch.Tensor


@dataclass
class _ConstraintTerms:
    """Constraint gradient ``[B, P]`` and Hessian diagonal ``[B, P]``."""

    grad: torch.Tensor
    diag: torch.Tensor
