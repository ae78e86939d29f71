"""A patch's result does not depend on the other patches of its batch (issue 16).

On a stiff likelihood the service saw patches change status between chunkings. Two causes
in the optimiser: the damping of a non-positive-definite Hessian was relative to the mean
diagonal of the whole padded matrix (padding and a stiff constraint's 1e11 set every other
direction's damping, so fits crawled and hit ``maxiter``), and minima were compared with an
NLL whose constants carry rounding of 1e-3. Each test fits the same patches alone, all
together and in chunks, and asserts identical statuses and values within 1e-10.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from afhub.fitting.batched import BatchedEngine
from afhub.fitting.types import FitTask
from benchmarks.synthetic_workspace import generate
from tests.fitting.test_batched_staus import staus_dir, staus_task  # noqa: F401 (fixture)

TOLERANCE = 1e-10


def _values(result) -> np.ndarray:
    return np.concatenate([np.ravel(result.values["cls_obs"]), np.ravel(result.values["cls_exp"])])


def _compositions(workspace, patches) -> list[dict[str, object]]:
    """Results keyed by patch name: all in one batch, one by one, in chunks of two fits."""

    def run(subset, **kwargs):
        task = FitTask(workspace=workspace, patches=tuple(subset))
        return {r.patch: r for r in BatchedEngine(num_threads=1, **kwargs).run(task)}

    alone: dict[str, object] = {}
    for p in patches:
        alone.update(run([p]))
    return [run(patches), alone, run(patches, chunk_size=2), run(list(reversed(patches)))]


def _assert_same(runs, names) -> None:
    first = runs[0]
    for other in runs[1:]:
        for name in names:
            assert other[name].status == first[name].status, name
            np.testing.assert_allclose(
                _values(other[name]), _values(first[name]), rtol=0, atol=TOLERANCE, err_msg=name
            )


def _bigger_patch(patch: dict) -> dict:
    """The same signal with one more (signal-only) systematic: a larger item pads the rest."""
    ops = copy.deepcopy(patch["patch"])
    for op in ops:
        op["value"]["modifiers"].append(
            {"name": "signal_theory", "type": "normsys", "data": {"hi": 1.2, "lo": 0.85}}
        )
    return {"name": patch["name"] + "+theory", "patch": ops}


@pytest.mark.slow
def test_stiff_synthetic_patches_do_not_depend_on_their_batch():
    workspace, patches = generate(n_patches=4, stiff=True)
    patches = [*patches[:3], _bigger_patch(patches[3])]
    runs = _compositions(workspace, patches)
    names = [p["name"] for p in patches]
    assert all(runs[0][n].status == "converged" for n in names)
    _assert_same(runs, names)


@pytest.mark.slow
def test_stau_patches_do_not_depend_on_their_batch(staus_dir):  # noqa: F811
    task = staus_task(staus_dir, "Region-lowMass", ("100_1", "160_40", "240_120", "320_80"))
    runs = _compositions(task.workspace, list(task.patches))
    names = [p["name"] for p in task.patches]
    assert all(runs[0][n].status == "converged" for n in names)
    _assert_same(runs, names)
