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
    from afhub.hubconfig.ports import (
        running_hub_message,
        unusable_ports,
        unusable_ports_message,
        wait_for_services_left_behind,
    )

    # before anything starts or prints: a second facility on the same home or ports stops here
    if running := running_hub_message(settings):
        return fail(running)
    wait_for_services_left_behind(settings)  # after a crash: they stop within seconds
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


#: what ``afhub up --help`` says before its options
UP_DESCRIPTION = """\
Start the local facility in the foreground: JupyterHub, configurable-http-proxy and
afhub's services (facility API, fitting, Dask Gateway, pages, dashboards, accountant,
culler). It says where to log in once the hub answers; Ctrl-C stops everything it started
within seconds. State (databases, secrets, logs, user homes) lives in AFHUB_HOME.

Every setting comes from its default, the environment or $AFHUB_HOME/afhub.yaml:
`afhub settings` shows each value and where it came from; docs/settings.md lists them all.
Two facilities side by side: give each its own AFHUB_HOME and AFHUB_PORT_BASE."""


def _ports_epilog() -> str:
    """The ports ``afhub up`` would listen on now, each with the variable that moves it."""
    from afhub.hubconfig.ports import facility_ports
    from afhub.settings import load_settings

    try:
        settings = load_settings()
        ports = facility_ports(settings)
    except Exception as exc:  # noqa: BLE001 - help must print even with a bad setting
        return f"ports: cannot be read ({exc})"
    lines = [f"ports now (AFHUB_PORT_BASE={settings.port_base} moves every one not set alone):"]
    lines += [f"  {p.port:>5}  {p.variable}" for p in ports]
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``afhub up``."""
    up = subparsers.add_parser(
        "up",
        help="start the local facility in the foreground",
        description=UP_DESCRIPTION,
        epilog=_ports_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    up.add_argument(
        "--demo",
        action="store_true",
        help="add the demo first: simulated GPU, MIG and FPGA profiles, a group tree with "
        "quotas, two users, an example likelihood (docs/quickstart.md); kept on restarts",
    )
    up.set_defaults(handler=cmd_up)
