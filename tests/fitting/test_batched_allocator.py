"""The batched engine keeps freed memory for its next iteration (afhub.fitting.batched.allocator).

Each check runs in a child process: the setting is process-wide, and the point is what a fresh
process (a fitting worker, the benchmark) does with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

#: the engine on a 4-patch grid of the synthetic 126-parameter workspace, twice; the page
#: faults of the second run (what a fitting worker's every later job pays)
_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from benchmarks.synthetic_workspace import generate
    from afhub.fitting.batched import BatchedEngine
    from afhub.fitting.types import FitTask

    bkg, patches = generate(n_patches=4)
    task = FitTask(workspace=bkg, patches=tuple(patches))
    engine = BatchedEngine(num_threads=1, reuse_memory=sys.argv[1] == "keep")
    engine.run(task)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    results = engine.run(task)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"faults": faults, "statuses": [r.status for r in results]}))
    """
)


def _probe(mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, mode],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc on Linux only")
def test_a_second_run_reuses_the_memory_of_the_first_instead_of_faulting_it_in_again():
    plain, kept = _probe("plain"), _probe("keep")
    assert plain["statuses"] == kept["statuses"] == ["converged"] * 4
    # measured: about 37,000 page faults without the setting, about 400 with it
    assert plain["faults"] > 10_000, plain
    assert kept["faults"] < plain["faults"] / 10, (plain, kept)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc on Linux only")
def test_the_setting_is_taken_here():
    from afhub.fitting.batched.allocator import keep_freed_memory

    assert keep_freed_memory(1 << 30) is True


def test_the_engine_can_be_told_to_leave_the_allocator_alone(monkeypatch):
    from afhub.fitting import batched
    from afhub.fitting.types import FitTask
    from tests.fitting.batched_workspaces import simple_workspace

    task = FitTask(workspace=simple_workspace())

    calls = []
    monkeypatch.setattr(batched, "keep_freed_memory", lambda n: calls.append(n))
    batched.BatchedEngine(reuse_memory=False).run(task)
    assert calls == []
    batched.BatchedEngine(memory_budget=1 << 28).run(task)
    assert calls == [1 << 28]
