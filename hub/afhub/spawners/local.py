"""The local spawner: single-user servers as processes on this machine.

It runs every server as the hub's own Unix user (no system accounts needed), with a home
folder per user under ``$AFHUB_HOME/homes``. Later issues teach it profiles (the same ones
the Kubernetes spawner resolves), devices and quotas; keep new behaviour in traits and
small methods so that those issues extend it rather than replace it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import escapism
from jupyterhub.spawner import SimpleLocalProcessSpawner
from traitlets import Unicode, default

from afhub.spawners.charging import ChargingMixin

#: characters kept as they are in the folder name of a user's home; others are escaped
SAFE_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789")
ESCAPE_CHAR = "-"


def safe_name(name: str) -> str:
    """A name safe for a folder, injective: ``user`` and ``user-hyphen`` stay distinct.

    Letters and digits are kept; every other character (the escape character included)
    becomes ``-XX`` (its hex code), as kubespawner's escaping does.
    """
    return escapism.escape(name, safe=SAFE_NAME_CHARS, escape_char=ESCAPE_CHAR).lower()


class AfhubLocalSpawner(ChargingMixin, SimpleLocalProcessSpawner):
    """Runs each user's server as a local process, as the hub's user, charged to a group."""

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

    def make_preexec_fn(self, name):
        home = self.home_dir

        def preexec():  # runs in the child: a private home, then the server starts in it
            os.makedirs(home, 0o700, exist_ok=True)
            os.chdir(home)

        return preexec
