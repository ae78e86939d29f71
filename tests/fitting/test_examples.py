"""The generated example likelihood: valid by pyhf's schemas, accepted by afhub's validation,
and fitted by afhub's pyhf engine to converged results that follow the signal's strength."""

from __future__ import annotations

import json

import pyhf
import pytest

from afhub.fitting.examples import (
    PATCHSET_FILE,
    WORKSPACE_FILE,
    example_likelihood,
    signal_patch_name,
)
from afhub.fitting.pyhf_engine import run_patch
from afhub.fitting.validation import validate_payload


def test_schemas_digest_and_grid_metadata():
    example = example_likelihood()
    pyhf.schema.validate(example.workspace, "workspace.json", version="1.0.0")
    pyhf.schema.validate(example.patchset, "patchset.json", version="1.0.0")
    patchset = pyhf.PatchSet(example.patchset)
    patchset.verify(pyhf.Workspace(example.workspace))
    assert patchset.labels == ["m1", "m2"]
    assert [tuple(p.values) for p in patchset.patches] == list(example.grid)
    assert example.patch_names == tuple(signal_patch_name(m1, m2) for m1, m2 in example.grid)
    assert all(m1 - m2 >= 200 for m1, m2 in example.grid)
    assert len(set(example.grid)) == len(example.grid) >= 10


def test_pure_and_files_are_the_documents():
    first, second = example_likelihood(), example_likelihood()
    assert first == second
    files = first.files()
    assert set(files) == {WORKSPACE_FILE, PATCHSET_FILE}
    assert json.loads(files[WORKSPACE_FILE]) == first.workspace
    assert json.loads(files[PATCHSET_FILE]) == first.patchset


def test_custom_grid_and_empty_grid_refused():
    example = example_likelihood(m1_values=(700, 500), m2_values=(0, 400), min_splitting=250)
    assert example.grid == ((500, 0), (700, 0), (700, 400))
    with pytest.raises(ValueError, match="at least one point"):
        example_likelihood(m1_values=(300,), m2_values=(200,))


def test_validated_and_fitted_light_point_excluded_heavy_not():
    example = example_likelihood()
    light, heavy = "sig_400_0", "sig_800_300"
    task = validate_payload(
        {
            "workspace": example.workspace,
            "patchset": example.patchset,
            "patch_names": [light, heavy],
            "operation": "hypotest",
        }
    )
    results = {r.patch: r for r in (run_patch(task, i) for i in range(2))}
    assert set(results) == {light, heavy}
    for result in results.values():
        assert result.status == "converged", result.diagnostics
    assert results[light].values["cls_obs"][0] < 0.05 < results[heavy].values["cls_obs"][0]
