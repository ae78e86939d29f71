"""The pure parts of the dashboards' prepared kernels (afhub.web.dashboards.pool) and the
environments a kernel starts with (afhub.web.dashboards.viewer); no kernel is started here
(tests/dashboards/test_dashboards.py takes prepared kernels on a real facility)."""

from __future__ import annotations

import os

import pytest
from voila.utils import ENV_VARIABLE

from afhub.web.dashboards import APPS, DASHBOARDS
from afhub.web.dashboards.pool import (
    WARM_IMPORTS,
    KernelPool,
    environment_change,
    handover_code,
    warmup_code,
)
from afhub.web.dashboards.viewer import Viewer, kernel_environment, neutral_environment


def test_pool_hands_out_each_kernel_once_oldest_first():
    pool = KernelPool(2)
    assert pool.shortfall() == 2
    pool.preparing = 2
    assert pool.shortfall() == 0
    pool.preparing = 0
    assert pool.add("a", {"HOME": "/h"})
    assert pool.add("b", {})
    assert not pool.add("c", {})  # full
    assert not pool.add("a", {})
    assert pool.take() == ("a", {"HOME": "/h"})
    assert "a" not in pool
    assert pool.shortfall() == 1
    assert pool.take() == ("b", {})
    assert pool.take() is None


def test_pool_forgets_dead_kernels_and_closes():
    pool = KernelPool(2)
    pool.add("a", {})
    pool.add("b", {})
    pool.discard("a")
    pool.discard("never")
    assert "a" not in pool
    assert pool.close() == ["b"]
    assert pool.take() is None
    assert pool.shortfall() == 0
    assert not pool.add("c", {})


def test_a_pool_of_size_zero_keeps_nothing():
    pool = KernelPool(0)
    assert pool.shortfall() == 0
    assert not pool.add("a", {})


def test_environment_change():
    changed, removed = environment_change(
        {"HOME": "/h", "OLD": "x", "SAME": "1"}, {"HOME": "/h2", "SAME": "1", "NEW": "n"}
    )
    assert changed == {"HOME": "/h2", "NEW": "n"}
    assert removed == ["OLD"]


def test_handover_sets_the_environment_and_runs_no_value_as_code(monkeypatch):
    current = {"HOME": "/h", "GONE": "1"}
    hostile = "x'); __import__('sys').exit(3) #\n\"\\"
    # Voila names the request's variables with StrEnum members (repr: no literal)
    wanted = {"HOME": "/h", "JUPYTERHUB_API_TOKEN": "t", ENV_VARIABLE.QUERY_STRING: hostile}
    environ = dict(current)
    monkeypatch.setattr(os, "environ", environ)
    namespace: dict = {}
    exec(handover_code(current, wanted), namespace)  # noqa: S102 - the code under test
    assert environ == wanted
    assert all(type(k) is str for k in environ)
    assert set(namespace) == {"__builtins__"}  # no name left in the kernel's namespace


def test_warmup_imports_leave_no_name_and_name_every_dashboard():
    namespace: dict = {}
    exec(warmup_code(["json", "email.utils"]), namespace)  # noqa: S102 - the code under test
    assert set(namespace) == {"__builtins__"}
    for name in DASHBOARDS:
        assert f"{name}_view" in WARM_IMPORTS
    local = [m for m in WARM_IMPORTS if (APPS / f"{m}.py").exists()]
    assert local == ["dashboard_kit", *(f"{name}_view" for name in DASHBOARDS)]


@pytest.fixture
def service_env(monkeypatch):
    monkeypatch.setenv("AFHUB_FACILITY_URL", "http://hub/services/facility/")
    return {
        "PATH": "/bin",
        "HOME": "/h",
        "JUPYTERHUB_API_TOKEN": "service-secret",
        "AFHUB_DB_URL": "postgresql://secret",
        "QUERY_STRING": "group=atlas",
        "VOILA_BASE_URL": "/services/dashboards/",
    }


def test_a_prepared_kernel_starts_without_token_viewer_or_request(service_env):
    env = neutral_environment(service_env)
    assert env == {
        "PATH": "/bin",
        "HOME": "/h",
        "AFHUB_FACILITY_URL": "http://hub/services/facility/",
    }


def test_a_page_views_kernel_has_its_viewer_and_request_only(service_env):
    env = kernel_environment(service_env, Viewer("ann", "ann-token"))
    assert env == {
        **neutral_environment(service_env),
        "QUERY_STRING": "group=atlas",
        "VOILA_BASE_URL": "/services/dashboards/",
        "JUPYTERHUB_USER": "ann",
        "JUPYTERHUB_API_TOKEN": "ann-token",
    }


def test_a_prepared_kernel_is_not_culled_and_ends_with_the_server():
    """One real kernel, prepared by the dashboards' kernel manager (no hub needed)."""
    import asyncio

    import psutil

    from afhub.web.dashboards.viewer import ViewerKernelManager

    def children() -> set[int]:
        return {child.pid for child in psutil.Process().children(recursive=True)}

    async def scenario() -> tuple[bool, bool, set[int]]:
        before = children()
        km = ViewerKernelManager(root_dir=str(APPS), pool_size=1, cull_idle_timeout=1)
        km.refill_pool()
        for _ in range(600):
            if len(km.pool):
                break
            await asyncio.sleep(0.1)
        kernel_id = next(iter(km.pool.ready))
        await asyncio.sleep(1.5)  # idle longer than cull_idle_timeout
        await km.cull_kernels()
        kept = kernel_id in km and kernel_id in km.pool
        km.pool.discard(kernel_id)  # as if handed out: now the culler may end it
        await km.cull_kernels()
        culled = kernel_id not in km
        km.refill_pool()  # another one, being prepared when the server stops
        await asyncio.sleep(0.5)
        await km.shutdown_all()
        await asyncio.sleep(0.5)
        return kept, culled, children() - before

    kept, culled, left = asyncio.run(scenario())
    assert kept
    assert culled
    assert left == set()  # no kernel process left behind


def test_only_a_default_kernel_in_the_apps_folder_comes_from_the_pool():
    import asyncio

    from afhub.web.dashboards.viewer import ViewerKernelManager

    async def fits() -> list[bool]:
        km = ViewerKernelManager(root_dir=str(APPS), pool_size=2)
        off = ViewerKernelManager(root_dir=str(APPS), pool_size=0)
        km.pool.close()  # nothing is started here
        return [
            km._poolable("", None),
            km._poolable("", km.default_kernel_name),
            km._poolable("onboarding", None),  # another folder: the kernel's cwd differs
            km._poolable("", "ir"),
            km._poolable(None, None),
            off._poolable("", None),
        ]

    assert asyncio.run(fits()) == [True, True, False, False, False, False]
