"""``afhub up``: start the local facility (JupyterHub, the proxy, afhub's services) in the
foreground; Ctrl-C stops everything it started."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from afhub.cli.database import fail
from afhub.settings import FacilitySettings

#: the hub's configuration file, in the afhub package
CONFIG_FILE = Path(__file__).parent.parent / "jupyterhub_config.py"
#: the hub the facility runs: JupyterHub that announces itself and stops promptly
HUB_APP = "afhub.hubconfig.hubapp"


def _admin_password_created(settings: FacilitySettings) -> bool:
    """Make sure the admin account has a password; True when it was created now (the hub
    then shows it in its announcement, once)."""
    from afhub.passwords import ensure_admin_password

    _password, created = ensure_admin_password(settings.admin_password_path)
    return created


def cmd_up(args: argparse.Namespace, settings: FacilitySettings) -> int:
    """Start the local facility; this process becomes JupyterHub
    (:mod:`afhub.hubconfig.hubapp`), which says where to log in once it answers."""
    from afhub.hubconfig import prepare_home
    from afhub.hubconfig.ports import running_hub_message, unusable_ports, unusable_ports_message

    # before anything starts or prints: a second facility on the same home or ports stops here
    if running := running_hub_message(settings):
        return fail(running)
    if unusable := unusable_ports(settings):
        return fail(unusable_ports_message(unusable, settings.port_base))
    proxy = settings.proxy_command
    if not (Path(proxy).exists() or shutil.which(proxy)):
        return fail(
            f"configurable-http-proxy not found ({proxy}); run `make install` "
            "or set AFHUB_PROXY_COMMAND"
        )
    prepare_home(settings)
    created = settings.authenticator == "local" and _admin_password_created(settings)
    from afhub.cli.demo import seed_demo  # pyhf (the example likelihood): only for --demo

    if args.demo and (status := seed_demo(settings)):
        return status
    os.chdir(settings.home)
    argv = [sys.executable, "-m", HUB_APP, "-f", str(CONFIG_FILE)]
    if created:
        argv.append("--JupyterHub.show_admin_password=True")
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
