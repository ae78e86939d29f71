"""``afhub up``: start the local facility (JupyterHub, the proxy, afhub's services) in the
foreground; Ctrl-C stops everything it started."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from afhub.cli.database import fail
from afhub.cli.demo import seed_demo
from afhub.settings import FacilitySettings

#: the hub's configuration file, in the afhub package
CONFIG_FILE = Path(__file__).parent.parent / "jupyterhub_config.py"


def _announce_admin_password(settings: FacilitySettings) -> None:
    from afhub.passwords import ensure_admin_password

    password, created = ensure_admin_password(settings.admin_password_path)
    if created:
        print(
            f"afhub: created the admin account's password (kept in "
            f"{settings.admin_password_path}, mode 0600):\n\n    {password}\n",
            flush=True,
        )
    else:
        print(f"afhub: the admin password is in {settings.admin_password_path}")


def cmd_up(args: argparse.Namespace, settings: FacilitySettings) -> int:
    """Start the local facility; this process becomes JupyterHub."""
    from afhub.hubconfig import prepare_home

    proxy = settings.proxy_command
    if not (Path(proxy).exists() or shutil.which(proxy)):
        return fail(
            f"configurable-http-proxy not found ({proxy}); run `make install` "
            "or set AFHUB_PROXY_COMMAND"
        )
    prepare_home(settings)
    print(f"afhub: state in {settings.home}", flush=True)
    if settings.authenticator == "local":
        _announce_admin_password(settings)
    if args.demo and (status := seed_demo(settings)):
        return status
    print(f"afhub: log in at {settings.public_url}hub/login (Ctrl-C stops)", flush=True)
    os.chdir(settings.home)
    argv = [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG_FILE)]
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with the hub
    return 0  # pragma: no cover


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``afhub up``."""
    up = subparsers.add_parser("up", help="start the local facility in the foreground")
    up.add_argument(
        "--demo",
        action="store_true",
        help="add the demo first: simulated GPU, MIG and FPGA profiles, a group tree with "
        "quotas, two users, an example likelihood (docs/quickstart.md); kept on restarts",
    )
    up.set_defaults(handler=cmd_up)
