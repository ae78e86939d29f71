"""pyhf's interpolation codes with their first and second derivatives, as torch functions.

- ``code4p`` (histosys, additive): for a nuisance parameter ``a`` and deltas
  ``up = hi - nom``, ``dn = nom - lo`` the shift is ``up * a`` for ``a > 1``, ``dn * a`` for
  ``a < -1`` and ``a * (S + a * A * (15 - 10 a^2 + 3 a^4))`` in between, with
  ``S = (up + dn) / 2`` and ``A = (up - dn) / 16``. The shift is linear in ``(up, dn)``, so
  :func:`code4p_weights` returns the weights of ``up`` and ``dn`` and their derivatives.
- ``code4`` (normsys, multiplicative): ``hi ** a`` for ``a >= 1``, ``lo ** -a`` for
  ``a <= -1`` and a degree-6 polynomial ``1 + sum c_i a^i`` in between, whose coefficients
  match value, first and second derivative at ``a = +-1`` (pyhf's ``A_inverse`` with
  ``alpha0 = 1``).
"""

from __future__ import annotations

import numpy as np
import torch

# pyhf's code4 A^-1 for alpha0 = 1: rows are the coefficients c1..c6, columns the entries of
# b = [hi - 1, lo - 1, ln(hi) hi, -ln(lo) lo, ln(hi)^2 hi, ln(lo)^2 lo].
_CODE4_AINV = np.array(
    [
        [15 / 16, -15 / 16, -7 / 16, -7 / 16, 1 / 16, -1 / 16],
        [3 / 2, 3 / 2, -9 / 16, 9 / 16, 1 / 16, 1 / 16],
        [-5 / 8, 5 / 8, 5 / 8, 5 / 8, -1 / 8, 1 / 8],
        [-3 / 2, -3 / 2, 7 / 8, -7 / 8, -1 / 8, -1 / 8],
        [3 / 16, -3 / 16, -3 / 16, -3 / 16, 1 / 16, -1 / 16],
        [1 / 2, 1 / 2, -5 / 16, 5 / 16, 1 / 16, 1 / 16],
    ]
)


def code4_coefficients(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """Polynomial coefficients ``c1..c6`` (last axis) of code4 for arrays of ``hi``/``lo``."""
    hi = np.asarray(hi, dtype=float)
    lo = np.asarray(lo, dtype=float)
    lhi, llo = np.log(hi), np.log(lo)
    b = np.stack([hi - 1, lo - 1, lhi * hi, -llo * lo, lhi**2 * hi, llo**2 * lo], axis=-1)
    return b @ _CODE4_AINV.T


def code4(
    a: torch.Tensor, log_hi: torch.Tensor, log_lo: torch.Tensor, coef: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``log|factor|`` of code4 at ``a`` with its first and second derivative, and ``factor < 0``.

    ``coef`` has one more trailing axis (6) than the other arguments. Working with the log
    makes products of factors sums. The factor is positive outside ``[-1, 1]``, but pyhf's
    polynomial in between can change sign for strongly asymmetric ``hi``/``lo`` (seen in a
    published likelihood: ``hi = 105.6``, ``lo = 0.01`` gives a negative factor for some
    ``a`` in ``(-1, 0)``); pyhf then multiplies the yield by the negative factor, and so does
    this model (the fourth value says where the factor is negative). The derivatives of
    ``log|p|`` are those of ``log p`` (``p'/p`` and ``p''/p - (p'/p)^2``) for either sign.
    """
    # polynomial branch, Horner's scheme for p, p', p''
    p = torch.zeros_like(a)
    dp = torch.zeros_like(a)
    d2p = torch.zeros_like(a)
    for i in range(6, 0, -1):
        c = coef[..., i - 1]
        d2p = d2p * a + dp * 2
        dp = dp * a + p
        p = p * a + c
    # p holds sum c_i a^(i-1); value = 1 + a * p
    d2 = 2 * dp + a * d2p
    d1 = p + a * dp
    val = 1 + a * p
    inner_log = torch.log(val.abs())
    inner_d1 = d1 / val
    inner_d2 = d2 / val - inner_d1**2
    up = a >= 1
    down = a <= -1
    zero = torch.zeros_like(a)
    log_val = torch.where(up, a * log_hi, torch.where(down, -a * log_lo, inner_log))
    d1_val = torch.where(up, log_hi, torch.where(down, -log_lo, inner_d1))
    d2_val = torch.where(up | down, zero, inner_d2)
    negative = ~(up | down) & (val < 0)
    return log_val, d1_val, d2_val, negative


def code4p_weights(a: torch.Tensor, n: int = 6) -> tuple[torch.Tensor, ...]:
    """Weights of ``up`` and ``dn`` in the code4p shift, with first and second derivatives.

    Returns the first ``n`` of ``(w_up, w_dn, dw_up, dw_dn, d2w_up, d2w_dn)``, each shaped
    like ``a``.
    """
    a2 = a * a
    q = 15 - 10 * a2 + 3 * a2 * a2  # polynomial of the antisymmetric part
    dq = -20 * a + 12 * a2 * a
    d2q = -20 + 36 * a2
    # inner: shift = a (up + dn)/2 + a^2 q (up - dn)/16
    r = a2 * q / 16
    dr = (2 * a * q + a2 * dq) / 16
    d2r = (2 * q + 4 * a * dq + a2 * d2q) / 16
    half_a = a / 2
    inner = (half_a + r, half_a - r, 0.5 + dr, 0.5 - dr, d2r, -d2r)
    zero = torch.zeros_like(a)
    one = torch.ones_like(a)
    above = a > 1
    below = a < -1
    outer_up = (a, zero, one, zero, zero, zero)
    outer_dn = (zero, a, zero, one, zero, zero)
    return tuple(
        torch.where(above, u, torch.where(below, d, i))
        for i, u, d in list(zip(inner, outer_up, outer_dn, strict=True))[:n]
    )
