"""Hard cases for the certificate and the ladder: small hand-written workspaces.

Each case is ``(background workspace, patches)``; built here, never downloaded. Used by
``tests/fitting/test_ladder.py``, ``tests/fitting/test_certificate.py`` and
``benchmarks/batched_gate.py`` (the "Hard cases" table of ``docs/fitting-engine.md``).
"""

from __future__ import annotations

import copy
from typing import Any


def _measurement(poi: str = "mu", parameters: list | None = None) -> list[dict[str, Any]]:
    return [{"name": "meas", "config": {"poi": poi, "parameters": parameters or []}}]


def _signal(yields: list[float], channel: int = 0, extra: list | None = None) -> dict:
    return {
        "op": "add",
        "path": f"/channels/{channel}/samples/0",
        "value": {
            "name": "signal",
            "data": yields,
            "modifiers": [{"name": "mu", "type": "normfactor", "data": None}, *(extra or [])],
        },
    }


def stiff() -> tuple[dict, list[dict]]:
    """A shapesys of 0.001 on a yield of 435 (tau about 1.9e11), next to ordinary
    systematics: the log-likelihood holds terms near 1e12 whose float64 rounding exceeds
    the changes an optimizer looks for (issue 16's stiff likelihood in miniature)."""
    bkg = {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "ttbar",
                        "data": [435.0, 120.0],
                        "modifiers": [
                            {"name": "stiff", "type": "shapesys", "data": [0.001, 0.001]},
                            {
                                "name": "jes",
                                "type": "normsys",
                                "data": {"hi": 1.08, "lo": 0.93},
                            },
                        ],
                    },
                    {
                        "name": "wjets",
                        "data": [60.0, 30.0],
                        "modifiers": [
                            {"name": "mcstat", "type": "staterror", "data": [4.0, 3.0]},
                            {"name": "wnorm", "type": "normsys", "data": {"hi": 1.2, "lo": 0.8}},
                        ],
                    },
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [512.0, 140.0]}],
        "measurements": _measurement(),
        "version": "1.0.0",
    }
    patches = [
        {"name": "stiff_sig_10", "patch": [_signal([10.0, 4.0])]},
        {"name": "stiff_sig_40", "patch": [_signal([40.0, 25.0])]},
    ]
    return bkg, patches


def pinned_at_bound() -> tuple[dict, list[dict]]:
    """The data want less background than a normfactor's lower bound allows: the fit ends
    at the bound (KKT with an active bound), and a POI bounded away from zero."""
    bkg = {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "bkg",
                        "data": [100.0, 80.0],
                        "modifiers": [
                            {"name": "kb", "type": "normfactor", "data": None},
                            {"name": "syst", "type": "normsys", "data": {"hi": 1.05, "lo": 0.95}},
                        ],
                    }
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [60.0, 50.0]}],
        "measurements": _measurement(
            parameters=[{"name": "kb", "bounds": [[0.9, 2.0]], "inits": [1.0]}]
        ),
        "version": "1.0.0",
    }
    return bkg, [{"name": "pinned", "patch": [_signal([5.0, 3.0])]}]


def degenerate_normfactors() -> tuple[dict, list[dict]]:
    """Two normfactors on the same samples; only a small second sample of the control region
    (carrying one of them) tells them apart: a nearly flat direction (k1 * k2 constant)."""

    def bkg_sample(data: list[float]) -> dict:
        return {
            "name": "bkg",
            "data": data,
            "modifiers": [
                {"name": "k1", "type": "normfactor", "data": None},
                {"name": "k2", "type": "normfactor", "data": None},
            ],
        }

    bkg = {
        "channels": [
            {"name": "SR", "samples": [bkg_sample([50.0, 40.0])]},
            {
                "name": "CR",
                "samples": [
                    bkg_sample([500.0]),
                    {
                        "name": "other",
                        "data": [5.0],
                        "modifiers": [{"name": "k1", "type": "normfactor", "data": None}],
                    },
                ],
            },
        ],
        "observations": [{"name": "SR", "data": [52.0, 41.0]}, {"name": "CR", "data": [510.0]}],
        "measurements": _measurement(
            parameters=[
                {"name": "k1", "bounds": [[0.1, 10.0]]},
                {"name": "k2", "bounds": [[0.1, 10.0]]},
            ]
        ),
        "version": "1.0.0",
    }
    return bkg, [{"name": "degenerate", "patch": [_signal([6.0, 2.0])]}]


def zero_yield_bins() -> tuple[dict, list[dict]]:
    """Bins with zero background, zero observed events, staterror with a zero yield."""
    bkg = {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "bkg",
                        "data": [0.0, 3.0, 0.0],
                        "modifiers": [
                            {"name": "stat_SR", "type": "staterror", "data": [0.0, 1.0, 0.0]},
                            {
                                "name": "bsys",
                                "type": "histosys",
                                "data": {
                                    "hi_data": [0.0, 3.5, 0.1],
                                    "lo_data": [0.0, 2.5, 0.0],
                                },
                            },
                        ],
                    }
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [0.0, 4.0, 0.0]}],
        "measurements": _measurement(),
        "version": "1.0.0",
    }
    return bkg, [{"name": "zero_bins", "patch": [_signal([0.5, 1.0, 0.0])]}]


def one_sided_zero_yield() -> tuple[dict, list[dict]]:
    """A bin with zero nominal background whose only histosys is one-sided (``lo`` equal to
    the nominal 0, ``hi`` 0.1), staterror with zero uncertainty, no events observed there:
    pyhf certifies it, the batched engine (December 2026) does not converge."""
    bkg = {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "bkg",
                        "data": [0.0, 3.0],
                        "modifiers": [
                            {"name": "stat_SR", "type": "staterror", "data": [0.0, 0.0]},
                            {
                                "name": "bsys",
                                "type": "histosys",
                                "data": {"hi_data": [0.1, 3.5], "lo_data": [0.0, 2.5]},
                            },
                        ],
                    }
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [0.0, 4.0]}],
        "measurements": _measurement(),
        "version": "1.0.0",
    }
    return bkg, [{"name": "one_sided_zero", "patch": [_signal([0.5, 1.0])]}]


def tiny_signal() -> tuple[dict, list[dict]]:
    """A signal far below the background (1e-4 of it): CLs close to 1, tiny test
    statistics."""
    bkg = {
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "bkg",
                        "data": [1000.0, 800.0],
                        "modifiers": [
                            {"name": "bsys", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
                            {"name": "lumi", "type": "lumi", "data": None},
                        ],
                    }
                ],
            }
        ],
        "observations": [{"name": "SR", "data": [1010.0, 790.0]}],
        "measurements": _measurement(
            parameters=[
                {
                    "name": "lumi",
                    "auxdata": [1.0],
                    "sigmas": [0.017],
                    "bounds": [[0.9, 1.1]],
                    "inits": [1.0],
                }
            ]
        ),
        "version": "1.0.0",
    }
    return bkg, [{"name": "tiny_signal", "patch": [_signal([0.1, 0.05])]}]


def removes_channel() -> tuple[dict, list[dict]]:
    """A patch that removes a channel (its model has fewer bins and parameters)."""
    bkg, _ = pinned_at_bound()
    bkg = copy.deepcopy(bkg)
    bkg["channels"].append(
        {
            "name": "CR",
            "samples": [
                {
                    "name": "bkg",
                    "data": [300.0],
                    "modifiers": [
                        {"name": "kb", "type": "normfactor", "data": None},
                        {"name": "cr_only", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
                    ],
                }
            ],
        }
    )
    bkg["observations"].append({"name": "CR", "data": [290.0]})
    bkg["measurements"][0]["config"]["parameters"] = []
    patches = [
        {"name": "keeps_cr", "patch": [_signal([5.0, 3.0])]},
        {
            "name": "removes_cr",
            "patch": [
                {"op": "remove", "path": "/channels/1"},
                {"op": "remove", "path": "/observations/1"},
                _signal([5.0, 3.0]),
            ],
        },
    ]
    return bkg, patches


CASES = {
    "stiff constraint (tau 1.9e11)": stiff,
    "parameter pinned at a bound": pinned_at_bound,
    "near-degenerate normfactors": degenerate_normfactors,
    "zero-yield bins": zero_yield_bins,
    "zero-yield bin, one-sided histosys": one_sided_zero_yield,
    "signal far below background": tiny_signal,
    "patch removes a channel": removes_channel,
}
