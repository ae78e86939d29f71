"""The ``afhub`` command line: run the local facility and manage it.

Subcommands:

- ``afhub up``: start the local facility (JupyterHub, the proxy, afhub's services) in the
  foreground; Ctrl-C stops everything it started.
- ``afhub users add|list|reset-password``: local accounts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from afhub.settings import FacilitySettings, SettingsError, load_settings


def _fail(message: str) -> int:
    print(f"afhub: {message}", file=sys.stderr)
    return 2


def cmd_up(args: argparse.Namespace, settings: FacilitySettings) -> int:
    """Start the local facility; this process becomes JupyterHub."""
    from afhub.hubconfig import prepare_home
    from afhub.passwords import ensure_admin_password

    proxy = settings.proxy_command
    if not (Path(proxy).exists() or shutil.which(proxy)):
        return _fail(
            f"configurable-http-proxy not found ({proxy}); run `make install` "
            "or set AFHUB_PROXY_COMMAND"
        )
    prepare_home(settings)
    print(f"afhub: state in {settings.home}", flush=True)
    if settings.authenticator == "local":
        password, created = ensure_admin_password(settings.admin_password_path)
        if created:
            print(
                f"afhub: created the admin account's password (kept in "
                f"{settings.admin_password_path}, mode 0600):\n\n    {password}\n",
                flush=True,
            )
        else:
            print(f"afhub: the admin password is in {settings.admin_password_path}")
    print(f"afhub: log in at {settings.public_url}hub/login (Ctrl-C stops)", flush=True)
    config_file = Path(__file__).with_name("jupyterhub_config.py")
    os.chdir(settings.home)
    argv = [sys.executable, "-m", "jupyterhub", "-f", str(config_file)]
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with the hub
    return 0  # pragma: no cover


def cmd_users(args: argparse.Namespace, settings: FacilitySettings) -> int:
    from afhub.accounts import AccountError, add_account, list_accounts, reset_password

    try:
        if args.users_command == "add":
            password = add_account(settings.hub_db_url, args.name)
            print(f"created user {args.name} with password: {password}")
        elif args.users_command == "reset-password":
            password = reset_password(settings.hub_db_url, args.name)
            print(f"new password for {args.name}: {password}")
        else:
            for account in list_accounts(settings.hub_db_url):
                state = "" if account.authorized else " (not authorized)"
                print(f"{account.name}{state}")
    except AccountError as exc:
        return _fail(str(exc))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="afhub", description="Run and manage an afhub analysis facility."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the local facility in the foreground")
    up.set_defaults(handler=cmd_up)

    users = sub.add_parser("users", help="local accounts (local login)")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    add = users_sub.add_parser("add", help="create a user with a generated password")
    add.add_argument("name")
    reset = users_sub.add_parser("reset-password", help="give a user a new password")
    reset.add_argument("name")
    users_sub.add_parser("list", help="list local accounts")
    users.set_defaults(handler=cmd_users)
    from afhub.cli_fit import register as register_fit
    from afhub.cli_groups import register as register_groups
    from afhub.cli_resources import register as register_resources

    register_groups(sub)
    register_resources(sub)

    register_fit(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # whatever a command creates (a database before the first ``afhub up``, a config) is
    # private to the facility's user, as the files of a running facility are
    previous = os.umask(0o077)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        try:
            settings = load_settings()
        except SettingsError as exc:
            return _fail(str(exc))
        return args.handler(args, settings)  # 'up' replaces this process, umask included
    finally:
        os.umask(previous)  # for a caller in the same process (tests)


if __name__ == "__main__":
    sys.exit(main())
