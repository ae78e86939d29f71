"""The worker pool's preloads (:data:`afhub.fitting.plan.PRELOAD`): modules of the fitting
core only, and importing them has no effect a worker process can observe (issue 12: the pool
preloaded a service module that changed the worker's parent-death signal at import)."""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

import pytest

from tests.fitting import preload_probe

FITTING_CORE = Path(__file__).resolve().parents[2] / "hub" / "afhub" / "fitting"


def test_every_preload_is_a_module_of_the_fitting_core():
    import importlib.util

    from afhub.fitting.plan import PRELOAD

    assert PRELOAD
    for name in PRELOAD:
        assert name.startswith("afhub.fitting."), name
        spec = importlib.util.find_spec(name)
        assert spec is not None, name
        assert spec.origin is not None, name
        assert Path(spec.origin).resolve().is_relative_to(FITTING_CORE), (name, spec.origin)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_importing_the_preloads_changes_nothing_in_a_worker_process():
    from afhub.fitting.plan import PRELOAD

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        seen = pool.apply(preload_probe.import_and_observe, (PRELOAD,))
    assert seen["already"] == []
    assert seen["after"] == seen["before"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_a_pool_worker_still_dies_with_the_service():
    from afhub.fitting.runner import KillablePool

    with KillablePool(1) as pool:
        assert pool.submit(preload_probe.pdeathsig, wall_seconds=60).result() == 9  # SIGKILL
