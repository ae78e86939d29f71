"""The local spawner: single-user servers as processes on this machine.

It runs every server as the hub's own Unix user (no system accounts needed), with a home
folder per user under ``$AFHUB_HOME/homes``. Its profiles are the Kubernetes spawner's
(:class:`afhub.spawners.profiles.ProfilesMixin`: the registry, the user's groups, what the
quota leaves), plus this machine (``local-cpu``, ``local-gpu``). The spawn form is
kubespawner's profile form with the "charge to group" select; a request is resolved server
side, charged to a group (:class:`afhub.spawners.facility.FacilitySpawner`) and given its
accelerators exclusively before the process starts. Registered accelerators that are not
mapped to this machine's GPUs are simulated: the server is told which slots it holds
(``AFHUB_DEVICES``, ``AFHUB_DEVICES_SIMULATED=1``) and sees no real GPU
(``CUDA_VISIBLE_DEVICES`` empty). See docs/resources.md.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import escapism
from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner
from traitlets import Integer, Unicode, default

from afhub.spawners import tutorials
from afhub.spawners.profiles import ProfilesMixin

#: characters kept as they are in the folder name of a user's home; others are escaped
SAFE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789")
ESCAPE_CHAR = "-"


def safe_name(name: str) -> str:
    """A name safe for a folder, injective: ``user`` and ``user-hyphen`` stay distinct.

    Letters and digits are kept; every other character (the escape character included)
    becomes ``-XX`` (its hex code), as kubespawner's escaping does.
    """
    return escapism.escape(name, safe=SAFE_NAME_CHARS, escape_char=ESCAPE_CHAR).lower()


#: how often a stopping process is looked at (JupyterHub's backoff grows to 5 s between
#: looks, so a server or service that exits in 1 s was seen gone up to 5 s later)
EXIT_POLL_SECONDS = 0.05


async def wait_for_exit(spawner: LocalProcessSpawner, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the process of ``spawner`` to exit, looking every
    :data:`EXIT_POLL_SECONDS`; True once it has."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await spawner.poll() is None:
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(EXIT_POLL_SECONDS)
    return True


class AfhubLocalSpawner(ProfilesMixin, SimpleLocalProcessSpawner):
    """Runs each user's server as a local process, as the hub's user, charged to a group,
    with the profile it chose and the devices it holds."""

    @default("local_devices")
    def _default_local_devices(self) -> bool:
        return True

    @default("options_form")
    def _default_options_form(self):
        async def form(spawner) -> str:
            return await spawner.profile_form()

        return form

    def options_from_form(self, formdata):
        """kubespawner's profile fields plus the charged group."""
        return self.profile_options_from_form(formdata)

    def apply_profile(self) -> None:
        """Locally, cores and memory are what is charged and announced (``CPU_LIMIT``,
        ``MEM_LIMIT`` in the server's environment); the image is not used."""
        resolved = self._afhub_resolved
        override = resolved.kubespawner_override if resolved is not None else {}
        for name in ("cpu_limit", "cpu_guarantee", "mem_limit", "mem_guarantee"):
            if override.get(name) is not None:
                setattr(self, name, override[name])

    def get_env(self):
        env = super().get_env()
        resolved = self._afhub_resolved
        if resolved is not None:
            for key, value in (resolved.kubespawner_override.get("environment") or {}).items():
                env[key] = str(value)
        env.update(self.device_env())
        return env

    interrupt_timeout = Integer(
        4,
        help="""Seconds a server has to exit after SIGINT before SIGTERM (JupyterHub: 30),
        so that Ctrl-C on the facility is over in under 10 s (docs/operations.md).""",
    ).tag(config=True)

    term_timeout = Integer(
        2, help="Seconds a server has to exit after SIGTERM before SIGKILL (JupyterHub: 30)."
    ).tag(config=True)

    async def wait_for_death(self, timeout: float = 10) -> bool:
        """A stopped server is seen gone as soon as it is (see :func:`wait_for_exit`)."""
        return await wait_for_exit(self, timeout)

    homes_root = Unicode(
        help="""Folder under which each user gets a home folder (named by
        :func:`safe_name` of the username). Default: ``$AFHUB_HOME/homes``.""",
    ).tag(config=True)

    @default("homes_root")
    def _default_homes_root(self) -> str:
        return str(Path(os.environ.get("AFHUB_HOME", ".afhub")).resolve() / "homes")

    @default("home_dir")
    def _default_home_dir(self) -> str:
        return str(Path(self.homes_root) / safe_name(self.user.name))

    @default("cmd")
    def _default_cmd(self) -> list[str]:
        # The hub's own interpreter, so that a server starts without an activated venv.
        return [sys.executable, "-m", "jupyterhub.singleuser"]

    @default("default_url")
    def _default_default_url(self) -> str:
        return "/lab"

    @default("args")
    def _default_args(self) -> list[str]:
        return ["--allow-root"] if os.geteuid() == 0 else []

    def make_preexec_fn(self, name):  # noqa: ARG002 (JupyterHub's signature; the home is ours)
        home = self.home_dir
        tutorials.place_quietly(home)  # first start: the onboarding notebooks (docs/tutorials.md)

        def preexec():  # runs in the child: a private home, then the server starts in it
            os.makedirs(home, 0o700, exist_ok=True)
            os.chdir(home)

        return preexec
