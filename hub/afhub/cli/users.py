"""``afhub users add|list|reset-password``: local accounts (local login), in the hub's
database."""

from __future__ import annotations

import argparse

from afhub.cli.database import fail, missing_facility
from afhub.settings import FacilitySettings


def cmd_users(args: argparse.Namespace, settings: FacilitySettings) -> int:
    from afhub.auth.accounts import AccountError, add_account, list_accounts, reset_password

    missing = missing_facility(settings.hub_db_url)
    if missing:
        return fail(missing)
    try:
        if args.users_command == "add":
            password = add_account(settings.hub_db_url, args.name)
            print(f"created user {args.name} with password: {password}")
        elif args.users_command == "reset-password":
            password = reset_password(settings.hub_db_url, args.name)
            print(f"new password for {args.name}: {password}")
        else:
            accounts = list_accounts(settings.hub_db_url)
            for account in accounts:
                state = "" if account.authorized else " (not authorized)"
                print(f"{account.name}{state}")
            if not accounts:
                print("no local accounts yet (`afhub users add USER` creates one)")
    except AccountError as exc:
        return fail(str(exc))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``afhub users ...``."""
    what = "local accounts (local login), in the hub's database"
    users = subparsers.add_parser("users", help=what, description=f"Manage {what}.")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    add = users_sub.add_parser("add", help="create a user with a generated password")
    add.add_argument("name", metavar="USER", help="the new username (lower case)")
    reset = users_sub.add_parser("reset-password", help="give a user a new password")
    reset.add_argument("name", metavar="USER", help="an existing username")
    users_sub.add_parser("list", help="list local accounts")
    users.set_defaults(handler=cmd_users)
