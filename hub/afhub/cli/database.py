"""The one way the CLI reaches the facility database: open the stores, run, close.

The commands that manage the facility (``groups``, ``quota``, ``invite``, ``usage``,
``resources``) talk to the afhub database directly (``--db-url``, ``$AFHUB_DB_URL``,
default ``sqlite:///$AFHUB_HOME/afhub.sqlite``), as a trusted operator: no permission
checks apply. People without database access use the facility API instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from afhub.groups.tree import PermissionDenied


def fail(message: str) -> int:
    """Say why on stderr, one line; exit status 2."""
    print(f"afhub: {message}", file=sys.stderr)
    return 2


def database_url(args: argparse.Namespace, settings: Any = None) -> str:
    """``--db-url``, else ``$AFHUB_DB_URL``, else the SQLite file in the facility home."""
    if getattr(args, "db_url", None):
        return args.db_url
    if os.environ.get("AFHUB_DB_URL"):
        return os.environ["AFHUB_DB_URL"]
    home = getattr(settings, "home", None) or os.environ.get("AFHUB_HOME", ".afhub")
    return f"sqlite:///{Path(home) / 'afhub.sqlite'}"


def db_option(parser: argparse.ArgumentParser) -> None:
    """The ``--db-url`` option of a command that opens the database."""
    parser.add_argument(
        "--db-url",
        help="afhub database URL (default: $AFHUB_DB_URL or sqlite:///$AFHUB_HOME/afhub.sqlite)",
    )


def database_command(
    subparsers: argparse._SubParsersAction, name: str, help: str
) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """Add command ``name`` (with ``--db-url``) and return it with its subcommands (their
    name in ``args.<name>_command``)."""
    command = subparsers.add_parser(name, help=help)
    db_option(command)
    return command, command.add_subparsers(dest=f"{name}_command", required=True)


def with_stores(args: argparse.Namespace, settings: Any, action: Callable[[Any], None]) -> int:
    """Open the stores, run ``action(stores)``, close them; a refusal is exit status 2."""
    from afhub.stores.errors import StoreError
    from afhub.stores.facade import Stores

    try:
        stores = Stores.open(database_url(args, settings))
    # a bad URL or an unreachable server, whatever the driver raises: say so, no traceback
    except Exception as exc:  # noqa: BLE001
        return fail(f"cannot open the database: {exc}")
    try:
        action(stores)
    except (StoreError, PermissionDenied, ValueError) as exc:
        return fail(str(exc))
    finally:
        stores.close()
    return 0
