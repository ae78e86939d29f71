"""``afhub up`` on ports it cannot use or on a facility that runs already (issue 13, start
like a service): it stops before anything starts or prints, with one line that names the
port and the setting that moves it, or the running hub.
What ``afhub up`` prints once the hub answers and how Ctrl-C stops it are checked on a
started facility in ``tests/test_restart.py`` (one facility for both)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from tests.facility import PROJECT_ROOT, Facility, free_port


def run_up(fac: Facility, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "afhub", "up"],
        env={**fac.env, **env},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_busy_port_stops_up_before_anything_starts_or_prints(tmp_path):
    fac = Facility(tmp_path / "home")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", fac.fitting_port))
        busy.listen()
        result = run_up(fac)
    assert result.returncode == 2
    assert result.stdout == ""  # no "log in at", no password
    (line,) = result.stderr.splitlines()
    assert f"port {fac.fitting_port} on 127.0.0.1 is in use (fitting_port)" in line
    assert "AFHUB_FITTING_PORT" in line
    assert "AFHUB_PORT_BASE" in line
    # nothing was started or made: no admin password, no database, no hub
    assert list(fac.home.iterdir()) == []


def test_a_port_given_to_two_settings_is_refused(tmp_path):
    fac = Facility(tmp_path / "home")
    result = run_up(fac, AFHUB_API_PORT=str(fac.port))
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert f"port {fac.port} on 127.0.0.1 is also given to AFHUB_API_PORT (port)" in line
    assert "set AFHUB_PORT to a free port" in line
    assert list(fac.home.iterdir()) == []


def test_a_second_up_on_a_running_facility_says_so(tmp_path):
    fac = Facility(tmp_path / "home")
    (fac.home / "jupyterhub.pid").write_text(str(os.getpid()))  # a running process
    result = run_up(fac)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert f"this facility ({fac.home}) already runs: its hub is process {os.getpid()}" in line


def test_up_help_names_the_settings_and_the_ports_it_would_use(tmp_path):
    env = {**os.environ, "AFHUB_HOME": str(tmp_path), "AFHUB_PORT_BASE": "9100"}
    env.pop("AFHUB_PORT", None)
    result = subprocess.run(
        [sys.executable, "-m", "afhub", "up", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "afhub settings" in text
    assert "AFHUB_PORT_BASE" in text
    assert "9100 AFHUB_PORT" in text
    assert "9187 AFHUB_DASHBOARDS_PORT" in text
    assert not (tmp_path / "afhub.sqlite").exists()  # help creates nothing


def test_a_restart_after_a_crash_waits_for_the_services_left_behind():
    """A service the killed hub left stops within seconds (its parent watch); `afhub up`
    waits for it before checking the ports instead of refusing its port as busy. A
    service of another facility (another hub) is not waited for."""
    import time

    from afhub.hubconfig.ports import services_left_behind, wait_for_services_left_behind
    from afhub.settings import FacilitySettings

    settings = FacilitySettings(hub_port=free_hub_port())

    def service(hub_port: int, seconds: float) -> subprocess.Popen:
        env = {
            **os.environ,
            "JUPYTERHUB_SERVICE_NAME": "fitting",
            "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub_port}/hub/api",
        }
        code = f"import time; time.sleep({seconds})"
        return subprocess.Popen([sys.executable, "-c", code], env=env)

    ours, theirs = service(settings.hub_port, 2.0), service(settings.hub_port + 1, 30.0)
    try:
        time.sleep(0.5)  # both have started
        assert [p.pid for p in services_left_behind(settings)] == [ours.pid]
        started = time.monotonic()
        wait_for_services_left_behind(settings)
        assert ours.poll() is not None
        assert time.monotonic() - started < 10
        assert theirs.poll() is None
    finally:
        for process in (ours, theirs):
            process.kill()
            process.wait()


def free_hub_port() -> int:
    return free_port()
