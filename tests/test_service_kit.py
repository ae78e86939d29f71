"""The pieces every hub service shares: the parent watch, the stop on a signal, and the
environment-backed settings helper."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from traitlets import Integer, TraitError, Unicode
from traitlets.config import Configurable

from afhub.services.kit.lifecycle import ParentWatch
from afhub.settings import from_env, integer, whole
from tests.facility import free_port

#: a service that runs until it is stopped; its atexit hook is the interpreter's tear-down
SERVICE = """
import atexit
from tornado.ioloop import IOLoop
from afhub.services.kit.lifecycle import run_until_stopped
atexit.register(print, "torn down", flush=True)
IOLoop.current().add_callback(print, "serving", flush=True)
run_until_stopped("a test service")
"""


def test_a_service_stops_on_sigint_at_once_and_skips_the_tear_down():
    service = subprocess.Popen(
        [sys.executable, "-c", SERVICE], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert service.stdout.readline() == "serving\n"
    began = time.monotonic()
    service.send_signal(signal.SIGINT)
    out, err = service.communicate(timeout=30)
    assert service.returncode == 0
    assert time.monotonic() - began < 5
    assert "torn down" not in out  # left with exit_process: no interpreter tear-down
    assert "Traceback" not in err


#: ``python -m module`` with the interpreter's tear-down made visible (an atexit hook)
AS_MAIN = """
import atexit, runpy
atexit.register(print, "torn down", flush=True)
runpy.run_module("{module}", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(scope="module")
def service_env(tmp_path_factory):
    """What the hub gives the accountant and the culler: a facility database (migrated) and
    a hub API address where nothing answers (the services keep waiting for it)."""
    from afhub.stores.facade import Stores

    home = tmp_path_factory.mktemp("services")
    url = f"sqlite:///{home / 'afhub.sqlite'}"
    Stores.open(url).close()
    port = free_port()
    return {
        **os.environ,
        "AFHUB_HOME": str(home),
        "AFHUB_DB_URL": url,
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{port}/hub/api",
        "JUPYTERHUB_API_TOKEN": "not-a-hub",
        "AFHUB_CHECKPOINT_INTERVAL": "60",
    }


@pytest.mark.parametrize(
    ("module", "ready", "stops"),
    [
        ("afhub.services.accountant", "Accounting every", "the accountant stops"),
        ("afhub.services.culler", "Culling servers idle", "the culler stops"),
    ],
)
def test_accountant_and_culler_stop_on_sigint_at_once(service_env, module, ready, stops):
    service = subprocess.Popen(
        [sys.executable, "-c", AS_MAIN.format(module=module)],
        env=service_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    while not any(ready in line for line in lines):  # its stop signals are handled from here
        line = service.stderr.readline()
        assert line, "".join(lines)
        lines.append(line)
    began = time.monotonic()
    service.send_signal(signal.SIGINT)
    out, err = service.communicate(timeout=30)
    assert service.returncode == 0, err
    assert time.monotonic() - began < 5
    assert stops in err
    assert "KeyboardInterrupt" not in err
    assert "torn down" not in out  # left with exit_process: no interpreter tear-down


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
