"""The pieces every hub service shares: the parent watch and the environment-backed
settings helper."""

from __future__ import annotations

import asyncio
import time

import pytest
from traitlets import Integer, TraitError, Unicode
from traitlets.config import Configurable

from afhub.services.kit.lifecycle import ParentWatch
from afhub.settings import from_env, integer, whole


def test_parent_watch_waits_its_time_or_until_stopped():
    async def scenario():
        watch = ParentWatch()
        assert not watch.gone
        started = time.monotonic()
        await watch.wait(0.2, step=0.05)
        waited = time.monotonic() - started
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, stop.set)
        started = time.monotonic()
        await watch.wait(step=0.02, stop=stop)
        return waited, time.monotonic() - started

    waited, until_stop = asyncio.run(scenario())
    assert 0.2 <= waited < 1.0
    assert until_stop < 1.0


class Example(Configurable):
    workers = Integer(help="Env: ``AFHUB_TEST_WORKERS``.").tag(config=True)
    _default_workers = from_env("workers", "AFHUB_TEST_WORKERS", 4, integer)
    helpers = Integer(help="Env: ``AFHUB_TEST_HELPERS``.").tag(config=True)
    _default_helpers = from_env(
        "helpers", "AFHUB_TEST_HELPERS", lambda settings: settings.workers * 2, whole(1)
    )
    name = Unicode(help="Env: ``AFHUB_TEST_NAME``.").tag(config=True)
    _default_name = from_env("name", "AFHUB_TEST_NAME", "plain")


def test_settings_come_from_the_environment_else_their_fallback(monkeypatch):
    monkeypatch.setenv("AFHUB_TEST_NAME", "")  # empty: the fallback
    assert (Example().workers, Example().helpers, Example().name) == (4, 8, "plain")
    monkeypatch.setenv("AFHUB_TEST_WORKERS", "3")
    monkeypatch.setenv("AFHUB_TEST_NAME", "given")
    assert (Example().workers, Example().helpers, Example().name) == (3, 6, "given")
    assert Example(workers=5).helpers == 10  # the YAML file's value wins over the variable
    monkeypatch.setenv("AFHUB_TEST_HELPERS", "0")
    with pytest.raises(TraitError, match="AFHUB_TEST_HELPERS=0 must be at least 1"):
        _ = Example().helpers
