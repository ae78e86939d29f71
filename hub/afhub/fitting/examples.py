"""An example likelihood with a signal grid, generated here (no published data is shipped).

A small two-channel search, in the layout HEPData publishes likelihoods in: a
background-only pyhf workspace and a patchset with one patch per signal mass point of a
2-D grid. Demos, tutorials, dashboards and tests use it to show a fit at once; for real
analyses fetch the published likelihoods from HEPData.

API (pure: no files, no randomness; the same arguments give the same documents)::

    from afhub.fitting.examples import example_likelihood

    example = example_likelihood()            # default grid (see DEFAULT_M1, DEFAULT_M2)
    example.workspace                         # dict: the background-only pyhf workspace
    example.patchset                          # dict: pyhf patchset, version 1.0.0
    example.grid                              # ((m1, m2), ...) in patch order
    example.patch_names                       # ("sig_400_0", ...) in patch order
    example.files()                           # {"BkgOnly.json": ..., "patchset.json": ...}

    example_likelihood(m1_values=(500, 700), m2_values=(0, 100, 200), min_splitting=200)

The model: a signal region ``SR`` of three bins in an effective-mass-like variable and a
control region ``CR`` of one bin that fixes the background's normalisation (``mu_bkg``,
shared by both). Each patch adds a ``signal`` sample to both channels, scaled by the POI
``mu_SIG``, with a luminosity (``lumi``) and a theory (``sig_theory``) uncertainty. The
patch of point ``(m1, m2)`` is named ``sig_<m1>_<m2>`` and carries ``values: [m1, m2]``
(labels ``m1``, ``m2``). The signal's rate falls with ``m1``, its efficiency with the
splitting ``m1 - m2``, so light points are excluded (CLs < 0.05) and heavy ones are not.

pyhf's patchset schema requires a HEPData reference; the generated patchset carries
``ins0000000``, a placeholder that names no record (its description says it is generated).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyhf

#: the default grid: m1 (the heavy particle) and m2 (the light one), in GeV
DEFAULT_M1: tuple[int, ...] = (400, 500, 600, 700, 800)
DEFAULT_M2: tuple[int, ...] = (0, 100, 200, 300)
#: points with m1 - m2 below this are left out (a compressed corner the search misses)
DEFAULT_MIN_SPLITTING = 200

#: what the two file names of :meth:`ExampleLikelihood.files` are (HEPData's convention)
WORKSPACE_FILE = "BkgOnly.json"
PATCHSET_FILE = "patchset.json"
#: pyhf's schema requires a HEPData reference: a placeholder that names no record
PLACEHOLDER_REFERENCE = "ins0000000"
POI = "mu_SIG"

_BACKGROUND_SR = (12.0, 6.0, 2.5)
_BACKGROUND_CR = 200.0
_OBSERVED_SR = (14.0, 5.0, 3.0)
_OBSERVED_CR = 205.0
#: the bins' centres of the SR variable (GeV), used to place the signal in the three bins
_SR_BIN_CENTRES = (300.0, 600.0, 900.0)


@dataclass(frozen=True)
class ExampleLikelihood:
    """A background-only workspace, its patchset and the grid the patches stand for."""

    workspace: dict[str, Any]
    patchset: dict[str, Any]
    grid: tuple[tuple[int, int], ...]

    @property
    def patch_names(self) -> tuple[str, ...]:
        return tuple(p["metadata"]["name"] for p in self.patchset["patches"])

    def files(self) -> dict[str, str]:
        """The two documents as JSON text under HEPData's file names."""
        return {
            WORKSPACE_FILE: json.dumps(self.workspace, indent=1) + "\n",
            PATCHSET_FILE: json.dumps(self.patchset, indent=1) + "\n",
        }


def signal_patch_name(m1: int, m2: int) -> str:
    """The name of the patch of mass point ``(m1, m2)``: ``sig_<m1>_<m2>``."""
    return f"sig_{m1}_{m2}"


def example_likelihood(
    m1_values: Sequence[int] = DEFAULT_M1,
    m2_values: Sequence[int] = DEFAULT_M2,
    *,
    min_splitting: int = DEFAULT_MIN_SPLITTING,
) -> ExampleLikelihood:
    """The example likelihood over the grid ``m1_values x m2_values`` (``m1 - m2 >=
    min_splitting``); raises ValueError for a grid with no point or a negative mass."""
    grid = tuple(
        (int(m1), int(m2))
        for m1 in sorted(set(m1_values))
        for m2 in sorted(set(m2_values))
        if m1 - m2 >= min_splitting
    )
    if any(m < 0 for point in grid for m in point) or not grid:
        raise ValueError(
            "the example's grid needs non-negative masses and at least one point with "
            f"m1 - m2 >= {min_splitting}"
        )
    workspace = background_workspace()
    patchset = {
        "version": "1.0.0",
        "metadata": {
            "description": "afhub's generated example search (not a published likelihood)",
            "digests": {"sha256": pyhf.utils.digest(workspace, algorithm="sha256")},
            "labels": ["m1", "m2"],
            "references": {"hepdata": PLACEHOLDER_REFERENCE},
        },
        "patches": [
            {
                "metadata": {"name": signal_patch_name(m1, m2), "values": [m1, m2]},
                "patch": signal_patch(m1, m2),
            }
            for m1, m2 in grid
        ],
    }
    return ExampleLikelihood(workspace=workspace, patchset=patchset, grid=grid)


def background_workspace() -> dict[str, Any]:
    """The background-only workspace: SR (3 bins) and CR (1 bin), POI ``mu_SIG``."""

    def background(data: Sequence[float], stat: Sequence[float], region: str) -> dict:
        modifiers: list[dict[str, Any]] = [
            {"name": "mu_bkg", "type": "normfactor", "data": None},
            {"name": f"staterror_{region}", "type": "staterror", "data": list(stat)},
        ]
        if region == "SR":
            modifiers.append(
                {"name": "bkg_transfer", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}
            )
        return {"name": "background", "data": list(data), "modifiers": modifiers}

    return {
        "version": "1.0.0",
        "channels": [
            {"name": "SR", "samples": [background(_BACKGROUND_SR, (1.2, 0.8, 0.5), "SR")]},
            {"name": "CR", "samples": [background((_BACKGROUND_CR,), (5.0,), "CR")]},
        ],
        "observations": [
            {"name": "SR", "data": list(_OBSERVED_SR)},
            {"name": "CR", "data": [_OBSERVED_CR]},
        ],
        "measurements": [
            {
                "name": "NormalMeasurement",
                "config": {
                    "poi": POI,
                    "parameters": [
                        {
                            "name": "lumi",
                            "auxdata": [1.0],
                            "sigmas": [0.02],
                            "bounds": [[0.9, 1.1]],
                            "inits": [1.0],
                        }
                    ],
                },
            }
        ],
    }


def signal_yields(m1: int, m2: int) -> tuple[list[float], float]:
    """The signal's expected events at ``mu_SIG = 1``: the SR's three bins and the CR's one.

    The rate falls exponentially with ``m1`` (a cross-section); the efficiency rises with
    the splitting ``m1 - m2`` and the events sit in the SR bin nearest to the splitting.
    """
    rate = 60.0 * math.exp(-(m1 - 400) / 150.0)
    splitting = m1 - m2
    efficiency = 1.0 - math.exp(-splitting / 250.0)
    weights = [math.exp(-(((splitting - c) / 250.0) ** 2)) for c in _SR_BIN_CENTRES]
    total = sum(weights)
    sr = [round(rate * efficiency * w / total, 4) for w in weights]
    cr = round(0.02 * rate, 4)
    return sr, cr


def signal_patch(m1: int, m2: int) -> list[dict[str, Any]]:
    """The JSON Patch that adds the signal of ``(m1, m2)`` to both channels."""
    sr, cr = signal_yields(m1, m2)

    def sample(data: list[float]) -> dict[str, Any]:
        return {
            "name": "signal",
            "data": data,
            "modifiers": [
                {"name": POI, "type": "normfactor", "data": None},
                {"name": "lumi", "type": "lumi", "data": None},
                {"name": "sig_theory", "type": "normsys", "data": {"hi": 1.15, "lo": 0.85}},
            ],
        }

    return [
        {"op": "add", "path": "/channels/0/samples/0", "value": sample(sr)},
        {"op": "add", "path": "/channels/1/samples/0", "value": sample([cr])},
    ]
