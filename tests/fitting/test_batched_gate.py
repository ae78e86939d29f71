"""Correctness gate on a subset of the sbottom patches (the full 650: benchmarks/batched_gate.py).

Four patches per region, chosen deterministically (smallest CRC32 of the file name), plus the
PROVENANCE.md reference point: the batched engine's CLs observed and the five expected values
must agree with pyhf (numpy backend, SLSQP with a tight tolerance) within 1e-3. Where they do
not, every one of the five fits must have reached an NLL at least as low as pyhf's, judged by
pyhf's own ``twice_nll`` (the lower minimum is the right one).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from afhub.fitting.batched import BatchedEngine
from afhub.fitting.types import FitTask
from tests.fitting.batched_helpers import (
    REGIONS,
    compare_minima,
    load_region,
    pyhf_hypotest,
    spread,
)

PER_REGION = 4
TOLERANCE = 1e-3
REFERENCE = ("RegionA", "patch.sbottom_1300_205_60.json")

pytestmark = pytest.mark.slow


def _subset(sbottom_dir):
    chosen = []
    for region in REGIONS:
        bkg, patches = load_region(sbottom_dir, region)
        names = spread(sorted(patches), PER_REGION, salt=region)
        if region == REFERENCE[0] and REFERENCE[1] not in names:
            names.append(REFERENCE[1])
        chosen.append((region, bkg, patches, names))
    return chosen


@pytest.fixture(scope="module")
def batched_results(sbottom_dir):
    engine = BatchedEngine()
    out = {}
    for region, bkg, patches, names in _subset(sbottom_dir):
        task = FitTask(
            workspace=bkg, patches=tuple({"name": n, "patch": patches[n]} for n in names)
        )
        assert engine.unsupported_reason(task) == [None] * len(names)
        for r in engine.run(task):
            out[(region, r.patch)] = r
    return out


def test_subset_is_spread_over_regions(batched_results):
    assert len(batched_results) == PER_REGION * len(REGIONS) + 1
    assert {k[0] for k in batched_results} == set(REGIONS)
    assert REFERENCE in batched_results


@pytest.mark.parametrize("region", REGIONS)
def test_batched_agrees_with_pyhf_or_finds_lower_minimum(sbottom_dir, batched_results, region):
    bkg, patches = load_region(sbottom_dir, region)
    checked = 0
    for (reg, name), result in sorted(batched_results.items()):
        if reg != region:
            continue
        assert result.status == "converged", (name, result.diagnostics)
        ref = pyhf_hypotest(bkg, patches[name], 1.0)
        diffs = [abs(result.values["cls_obs"][0] - ref.cls_obs)] + [
            abs(a - b) for a, b in zip(result.values["cls_exp"][0], ref.cls_exp, strict=True)
        ]
        if not all(math.isfinite(d) for d in diffs) or max(diffs) > TOLERANCE:
            minima = compare_minima(bkg, patches[name])
            lower = {k: f["batched_lower_or_equal"] for k, f in minima["fits"].items()}
            assert all(lower.values()), (name, diffs, minima["fits"])
        checked += 1
    assert checked >= PER_REGION


def test_documented_disagreement_is_a_better_pyhf_minimum(sbottom_dir):
    """RegionB, m(sb)=1400 GeV: CLs ~ 1 and q_mu,A ~ 1e-6, pyhf's free fit to the Asimov data
    stops above the minimum (docs/fitting-engine.md); the batched fits are never higher."""
    bkg, patches = load_region(sbottom_dir, "RegionB")
    minima = compare_minima(bkg, patches["patch.sbottom_1400_250_60.json"])
    for name, fit in minima["fits"].items():
        assert fit["batched_lower_or_equal"], (name, fit)
    free = minima["fits"]["free_asimov"]
    gap = free["pyhf_twice_nll_at_pyhf"] - free["pyhf_twice_nll_at_batched"]
    # where the two engines' CLs differ, the gap in the free Asimov fit explains it
    diff = max(
        [abs(minima["batched_cls_obs"] - minima["pyhf_cls_obs"])]
        + [
            abs(a - b)
            for a, b in zip(minima["batched_cls_exp"], minima["pyhf_cls_exp"], strict=True)
        ]
    )
    if diff > TOLERANCE:
        assert gap > 1e-7


def test_a_fixed_fit_in_another_basin_starts_again_from_the_other_data_sets_fit(sbottom_dir):
    """RegionA, sbottom_500_180_50: at mu = 1 the likelihood of the Asimov data has two
    minima. Both starts of the fixed-POI Asimov fit (pyhf's inits, the Asimov-generating fit)
    stopped in the higher one, 0.0129 above pyhf's in 2 NLL, and the expected CLs band was
    7.6e-4 off, inside the gate's tolerance. The fixed-POI fit to the observed data's point
    leads to the lower one (asymptotics._cross_starts): every fit is now at least as low as
    pyhf's, and the CLs agree."""
    bkg, patches = load_region(sbottom_dir, "RegionA")
    minima = compare_minima(bkg, patches["patch.sbottom_500_180_50.json"])
    for name, fit in minima["fits"].items():
        assert fit["batched_lower_or_equal"], (name, fit)
    assert abs(minima["batched_cls_obs"] - minima["pyhf_cls_obs"]) < 1e-7
    for ours, theirs in zip(minima["batched_cls_exp"], minima["pyhf_cls_exp"], strict=True):
        assert abs(ours - theirs) < 1e-5


def test_where_pyhf_generates_asimov_data_from_a_local_minimum_the_fits_compare_on_one_data_set():
    """A random workspace of the property tests (a one-sided histosys): pyhf's fit that
    generates the Asimov data (mu = 0) stops 0.96 in 2 NLL above the batched engine's, so
    the two engines' Asimov fits are fitted to different data and their CLs differ (0.611
    against pyhf's 0.573). ``compare_minima`` then redoes pyhf's Asimov fits on the batched
    engine's Asimov data: there every batched fit is at or below pyhf's, so the batched
    value is the one of the lower minima."""
    spec = json.loads((Path(__file__).parent / "pyhf_asimov_local_minimum.json").read_text())
    minima = compare_minima(spec, [])
    gen = minima["fits"]["asimov_generation"]
    assert gen["pyhf_twice_nll_at_pyhf"] - gen["pyhf_twice_nll_at_batched"] > 0.5
    for name, fit in minima["fits"].items():
        assert fit["batched_lower_or_equal"], (name, fit)
    assert abs(minima["batched_cls_obs"] - minima["pyhf_cls_obs"]) > 0.01
