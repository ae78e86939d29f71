"""The one way the CLI reaches the facility database: find it, open the stores, run, close.

The commands that manage the facility (``groups``, ``quota``, ``invite``, ``usage``,
``resources``) talk to the afhub database directly (``--db-url``, else the setting
``db_url``: ``$AFHUB_DB_URL`` or ``afhub.sqlite`` in the facility's home), as a trusted
operator: no permission checks apply. People without database access use the facility API
instead. A command never creates a facility: where the home holds no database it says so in
one line and changes nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from afhub.cli.parser import CommandParser
from afhub.groups.tree import PermissionDenied

#: what a person can do when there is no facility where the CLI looks
NO_FACILITY_HINT = (
    "start one there with `afhub up`, or set AFHUB_HOME to the folder of an existing facility"
)


#: what a command adds to "no such ...": where to look up the names there are
LOOK_UP = {
    "groups": " (`afhub groups list` shows the groups)",
    "quota": " (`afhub groups list` shows the groups)",
    "usage": " (`afhub groups list` shows the groups)",
    "invite": " (`afhub invite list PATH` shows a group's invitations)",
    "resources": " (`afhub resources list` and `afhub resources providers list` show them)",
}


def fail(message: str) -> int:
    """Say why on stderr, one line; exit status 2."""
    print(f"afhub: {message}", file=sys.stderr)
    return 2


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL; ``None`` for any other database."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url[len(prefix) :] in ("", ":memory:"):
        return None
    return Path(url[len(prefix) :].split("?", 1)[0])


def missing_facility(url: str) -> str | None:
    """A one-line message when ``url`` is a SQLite file that does not exist (there is no
    facility there), else ``None``."""
    path = sqlite_file(url)
    if path is None or path.exists():
        return None
    return f"no facility in {path.parent} (no {path.name} there): {NO_FACILITY_HINT}"


def database_url(args: argparse.Namespace, settings: Any) -> str:
    """``--db-url``, else the ``db_url`` setting."""
    return getattr(args, "db_url", None) or settings.db_url


def db_option(parser: argparse.ArgumentParser, default: Any = None) -> None:
    """The ``--db-url`` option of a command that opens the database."""
    parser.add_argument(
        "--db-url",
        metavar="URL",
        default=default,
        help="afhub database URL (default: $AFHUB_DB_URL, else afhub.sqlite in the "
        "facility's home; see `afhub settings`)",
    )


class _DatabaseSubcommand(CommandParser):
    """A subcommand of a database command: ``--db-url`` may also follow it
    (``afhub groups list --db-url URL``) without undoing one given before it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        db_option(self, default=argparse.SUPPRESS)


def database_command(
    subparsers: argparse._SubParsersAction, name: str, help: str
) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """Add command ``name`` (with ``--db-url``) and return it with its subcommands (their
    name in ``args.<name>_command``)."""
    command = subparsers.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
    db_option(command)
    return command, command.add_subparsers(
        dest=f"{name}_command", required=True, metavar="COMMAND", parser_class=_DatabaseSubcommand
    )


def with_stores(args: argparse.Namespace, settings: Any, action: Callable[[Any], None]) -> int:
    """Open the stores, run ``action(stores)``, close them; a refusal is exit status 2."""
    from afhub.stores.errors import NotFound, StoreError
    from afhub.stores.facade import Stores

    url = database_url(args, settings)
    missing = missing_facility(url)
    if missing:
        return fail(missing)
    try:
        stores = Stores.open(url)
    # a bad URL or an unreachable server, whatever the driver raises: say so, no traceback
    except Exception as exc:  # noqa: BLE001
        return fail(f"cannot open the database {url}: {first_line(exc)}")
    try:
        action(stores)
    except NotFound as exc:
        return fail(f"{exc}{LOOK_UP.get(args.command, '')}")
    except (StoreError, PermissionDenied, ValueError) as exc:
        return fail(str(exc))
    finally:
        stores.close()
    return 0


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only (drivers add SQL and links below it)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
