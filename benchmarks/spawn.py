"""Time from login to a ready JupyterLab: afhub's local facility vs a plain JupyterHub.

Both hubs run on this machine at the same time with the same configurable-http-proxy:
afhub as ``afhub up`` starts it, and a plain JupyterHub with ``SimpleLocalProcessSpawner``
and ``DummyAuthenticator``. Spawns alternate between the two (ABAB...) so that drift in
the machine's load affects both alike. One spawn = POST the login form, start the server
through the REST API, wait until ``/user/NAME/lab`` answers 200. Stopping is not timed.

Run: ``make bench-spawn`` (or ``.venv/bin/python benchmarks/spawn.py --spawns 12``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urljoin

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import summary, write_section
from tests.facility import PROJECT_ROOT, Facility, HubSession

PLAIN_CONFIG = """
c = get_config()  # noqa
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = [{chp!r}]
c.JupyterHub.db_url = "sqlite:///{home}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{home}/cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "jupyterhub.spawner.SimpleLocalProcessSpawner"
c.SimpleLocalProcessSpawner.home_dir_template = "{home}/homes/{{username}}"
c.Spawner.cmd = [{python!r}, "-m", "jupyterhub.singleuser"]
c.Spawner.args = ["--allow-root"]
c.Spawner.default_url = "/lab"
"""


class PlainHub(Facility):
    """A plain JupyterHub with SimpleLocalProcessSpawner, started like the facility."""

    def extra_config(self) -> str:
        """Lines appended to the plain configuration (none here; subclasses add some)."""
        return ""

    def start(self, timeout: float = 60) -> PlainHub:
        config = self.home / "plain_config.py"
        config.write_text(
            PLAIN_CONFIG.format(
                port=self.port,
                hub_port=self.hub_port,
                api_port=self.proxy_api_port,
                chp=str(PROJECT_ROOT / "node_modules" / ".bin" / "configurable-http-proxy"),
                home=self.home,
                python=sys.executable,
            )
            + self.extra_config()
        )
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)],
            cwd=self.home,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(urljoin(self.url, "hub/health"), timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                time.sleep(0.25)
        raise RuntimeError(f"plain hub not up:\n{self.log_tail()}")


def one_spawn(hub: Facility, username: str, password: str) -> float:
    """Seconds from the login POST to a 200 from the user's JupyterLab page."""
    session = HubSession(hub)
    session.get(urljoin(hub.hub_url, "login"), timeout=10)
    t0 = time.perf_counter()
    response = session.login(username, password)
    assert response.status_code == 302, response.status_code
    session.start_server(timeout=120)
    lab = session.get(urljoin(hub.url, f"user/{username}/lab"), timeout=60)
    elapsed = time.perf_counter() - t0
    assert lab.status_code == 200, lab.status_code
    session.stop_server()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawns", type=int, default=12, help="spawns per hub (>= 10)")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        afhub = Facility(Path(tmp) / "afhub").start()
        plain = PlainHub(Path(tmp) / "plain").start()
        try:
            afhub_user = ("bench", afhub.add_user("bench"))
            plain_user = ("bench", "anything")
            one_spawn(afhub, *afhub_user)  # warm-up: first import of JupyterLab etc.
            one_spawn(plain, *plain_user)
            times: dict[str, list[float]] = {"afhub": [], "plain": []}
            for i in range(args.spawns):
                order = [("afhub", afhub, afhub_user), ("plain", plain, plain_user)]
                for name, hub, user in order if i % 2 == 0 else order[::-1]:
                    times[name].append(one_spawn(hub, *user))
                    print(f"{name:6s} spawn {i + 1:2d}: {times[name][-1]:.2f} s", flush=True)
        finally:
            afhub.stop()
            plain.stop()

    a, p = summary(times["afhub"]), summary(times["plain"])
    ratio_median, ratio_p95 = a["median"] / p["median"], a["p95"] / p["p95"]
    table = (
        "## Spawn: login to a ready JupyterLab\n\n"
        "`make bench-spawn` (`benchmarks/spawn.py --spawns "
        f"{args.spawns}`): {args.spawns} spawns per hub, alternating, after one warm-up "
        "each. Plain = JupyterHub with `SimpleLocalProcessSpawner` and `DummyAuthenticator`, "
        "same proxy, same machine, same run.\n\n"
        "| hub | median (s) | p95 (s) | min (s) | max (s) |\n|---|---|---|---|---|\n"
        f"| afhub local facility | {a['median']:.2f} | {a['p95']:.2f} | {a['min']:.2f} | "
        f"{a['max']:.2f} |\n"
        f"| plain JupyterHub | {p['median']:.2f} | {p['p95']:.2f} | {p['min']:.2f} | "
        f"{p['max']:.2f} |\n"
        f"| **ratio afhub / plain** | **{ratio_median:.3f}** | **{ratio_p95:.3f}** | | |\n\n"
        "Target: afhub within 1.10x of plain JupyterHub.\n"
    )
    print(table)
    if not args.no_write:
        print(f"written to {write_section('spawn', table)}")


if __name__ == "__main__":
    main()
