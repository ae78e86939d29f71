"""The ``afhub`` command line: run the local facility and manage it.

One module per command group, each with a ``register(subparsers)`` that adds its
subcommands; a subcommand sets ``handler`` to a function ``(args, settings) -> int`` (the
exit status). Commands that manage the facility reach its database through
:mod:`afhub.cli.database` only; they find the facility the same way from any folder (the
setting ``home``: ``$AFHUB_HOME``, else the one ``afhub up`` uses) and never create one.
Every error is one line on stderr that says what to do next; never a traceback.

- ``afhub up`` (:mod:`afhub.cli.up`), ``afhub users`` (:mod:`afhub.cli.users`),
  ``afhub settings`` (:mod:`afhub.cli.settings`)
- ``afhub groups|quota|invite|usage`` (:mod:`~afhub.cli.groups`, :mod:`~afhub.cli.quota`,
  :mod:`~afhub.cli.invite`, :mod:`~afhub.cli.usage`)
- ``afhub resources`` (:mod:`afhub.cli.resources`)
- ``afhub login|token`` (:mod:`afhub.cli.login`), ``afhub fit`` (:mod:`afhub.cli.fit`):
  remote commands, over HTTP with the person's own token
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from afhub.cli import (
    fit,
    groups,
    invite,
    login,
    quota,
    resources,
    settings,
    up,
    usage,
    users,
)
from afhub.cli.database import fail, first_line
from afhub.cli.parser import CommandParser
from afhub.settings import SettingsError, load_settings

#: the command groups, in the order ``afhub --help`` lists them
COMMAND_GROUPS = (
    up,
    settings,
    users,
    groups,
    quota,
    invite,
    usage,
    resources,
    login,
    fit,
)

#: set to see the traceback of an unexpected error instead of its one line
DEBUG_VARIABLE = "AFHUB_DEBUG"


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add every command group's subcommands."""
    for group in COMMAND_GROUPS:
        group.register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="afhub",
        description="Run and manage an afhub analysis facility. Every command finds the "
        "facility in $AFHUB_HOME, else where `afhub up` keeps it; `afhub settings` shows "
        "where that is.",
    )
    register_commands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def _run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        return fail(str(exc))
    try:
        return args.handler(args, settings)  # 'up' replaces this process, umask included
    except KeyboardInterrupt:
        return fail("interrupted")
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    # whatever a command did not foresee is still one line (AFHUB_DEBUG=1: the traceback)
    except Exception as exc:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        return fail(
            f"{args.command} failed: {type(exc).__name__}: {first_line(exc)} (run again with "
            f"{DEBUG_VARIABLE}=1 for the details, and report it)"
        )


def main(argv: Sequence[str] | None = None) -> int:
    # whatever a command creates (a config, a token file) is private to the facility's
    # user, as the files of a running facility are
    previous = os.umask(0o077)
    try:
        return _run(build_parser().parse_args(argv))
    finally:
        os.umask(previous)  # for a caller in the same process (tests)


if __name__ == "__main__":
    sys.exit(main())
