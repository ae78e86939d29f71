"""Padding a batch of compiled models to common shapes (the arrays behind ``BatchedModel``).

Parameters beyond an item's own are fixed at 0 and touch nothing; two extra slots hold the
constants 1 (index ``P``) and 0 (index ``P + 1``) that padded entries point to; padded cells
have zero yield; padded bins are masked out. Everything here is numpy; the model turns the
arrays into tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from afhub.fitting.batched.spec import CompiledModel


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


@dataclass(frozen=True)
class PadShape:
    """The common (padded) sizes of a batch of compiled models."""

    B: int  # items
    P: int  # parameters (slots P and P + 1 hold the constants 1 and 0)
    C: int  # cells
    N: int  # bins
    E: int  # normsys entries (the last one pads: the factor 1)
    KN: int  # normsys entries per cell
    KH: int  # histosys entries per cell
    K: int  # linear factors per cell
    NG: int  # Gaussian constraints
    NQ: int  # Poisson constraints

    @classmethod
    def of(cls, models: list[CompiledModel]) -> PadShape:
        return cls(
            B=len(models),
            P=max(m.n_pars for m in models),
            C=max(m.n_cells for m in models),
            N=max(m.n_bins for m in models),
            E=max([0] + [len(m.ns_par) for m in models]) + 1,
            KN=max([1] + [_max_per_cell(m.ns_map_cell, m.n_cells) for m in models]),
            KH=max([1] + [_max_per_cell(m.histo_cell, m.n_cells) for m in models]),
            K=max([1] + [_max_per_cell(m.f_cell, m.n_cells) for m in models]),
            NG=max([1] + [len(m.gauss_par) for m in models]),
            NQ=max([1] + [len(m.pois_par) for m in models]),
        )


def padded_arrays(s: PadShape) -> dict[str, np.ndarray]:
    """Every array of the batch, filled with its padding (entries that touch nothing)."""
    B, C, P = s.B, s.C, s.P
    ONE, ZERO = P, P + 1
    i64 = np.int64
    return {
        "nominal": np.zeros((B, C)),
        "onehot": np.zeros((B, s.N, C)),
        "bin_mask": np.zeros((B, s.N)),
        "observed": np.zeros((B, s.N)),
        "cell_h_par": np.full((B, C, s.KH), ZERO, dtype=i64),
        "cell_h_up": np.zeros((B, C, s.KH)),
        "cell_h_dn": np.zeros((B, C, s.KH)),
        "ns_par": np.full((B, s.E), ZERO, dtype=i64),
        "ns_hi": np.ones((B, s.E)),
        "ns_lo": np.ones((B, s.E)),
        "cell_ns": np.full((B, C, s.KN), s.E - 1, dtype=i64),
        "f_par": np.full((B, C, s.K), ONE, dtype=i64),
        "g_par": np.full((B, s.NG), ZERO, dtype=i64),
        "g_aux": np.zeros((B, s.NG)),
        "g_sigma": np.ones((B, s.NG)),
        "g_mask": np.zeros((B, s.NG)),
        "q_par": np.full((B, s.NQ), ONE, dtype=i64),
        "q_aux": np.ones((B, s.NQ)),
        "q_tau": np.ones((B, s.NQ)),
        "q_mask": np.zeros((B, s.NQ)),
        "init": np.zeros((B, P)),
        "lower": np.zeros((B, P)),
        "upper": np.zeros((B, P)),
        "free": np.zeros((B, P), dtype=bool),
        "poi": np.zeros(B, dtype=i64),
    }


def fill_item(arr: dict[str, np.ndarray], b: int, m: CompiledModel) -> None:
    """Write compiled model ``m`` into row ``b`` of the padded arrays."""
    nc, nb, npar = m.n_cells, m.n_bins, m.n_pars
    arr["nominal"][b, :nc] = m.nominal
    arr["onehot"][b, m.cell_bin, np.arange(nc)] = 1.0
    arr["bin_mask"][b, :nb] = 1.0
    arr["observed"][b, :nb] = m.observed
    hs = _slots(m.histo_cell)
    arr["cell_h_par"][b, m.histo_cell, hs] = m.histo_par
    arr["cell_h_up"][b, m.histo_cell, hs] = m.histo_up
    arr["cell_h_dn"][b, m.histo_cell, hs] = m.histo_dn
    ne = len(m.ns_par)
    arr["ns_par"][b, :ne], arr["ns_hi"][b, :ne], arr["ns_lo"][b, :ne] = m.ns_par, m.ns_hi, m.ns_lo
    arr["cell_ns"][b, m.ns_map_cell, _slots(m.ns_map_cell)] = m.ns_map_entry
    arr["f_par"][b, m.f_cell, _slots(m.f_cell)] = m.f_par
    ng, nq = len(m.gauss_par), len(m.pois_par)
    arr["g_par"][b, :ng], arr["g_aux"][b, :ng] = m.gauss_par, m.gauss_aux
    arr["g_sigma"][b, :ng] = m.gauss_sigma
    arr["g_mask"][b, :ng] = 1.0
    arr["q_par"][b, :nq], arr["q_aux"][b, :nq], arr["q_tau"][b, :nq] = (
        m.pois_par,
        m.pois_aux,
        m.pois_tau,
    )
    arr["q_mask"][b, :nq] = 1.0
    arr["init"][b, :npar] = m.init
    arr["lower"][b, :npar] = m.lower
    arr["upper"][b, :npar] = m.upper
    arr["free"][b, :npar] = ~m.fixed
    arr["poi"][b] = m.poi_index


def dense_histosys(arr: dict[str, np.ndarray], s: PadShape) -> np.ndarray | None:
    """``[B, C, 2P]`` histosys deltas up and down where the histosys is dense, else ``None``."""
    if 2 * s.KH < s.P:  # dense enough: [C, 2P] costs at most 4 / 3 of the [C, KH] entries
        return None
    B, C, P = s.B, s.C, s.P
    h_dense = np.zeros((B, C, 2 * (P + 2)))
    rows = np.arange(B)[:, None, None]
    cols = np.arange(C)[None, :, None]
    par = arr["cell_h_par"]
    np.add.at(h_dense, (rows, cols, par), arr["cell_h_up"])
    np.add.at(h_dense, (rows, cols, par + P + 2), arr["cell_h_dn"])
    return np.concatenate([h_dense[..., :P], h_dense[..., P + 2 : 2 * P + 2]], -1)


def factor_columns(f_par: np.ndarray, P: int) -> tuple[np.ndarray, np.ndarray]:
    """The parameters that are linear factors anywhere in the batch, ``[B, F]`` (the same row
    for every item), and ``f_par`` renumbered into them (``F`` for the padding slots)."""
    cols = np.unique(f_par[f_par < P])
    lookup = np.full(P + 2, len(cols), dtype=np.int64)
    lookup[cols] = np.arange(len(cols))
    return np.broadcast_to(cols, (f_par.shape[0], len(cols))).copy(), lookup[f_par]
