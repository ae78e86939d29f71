"""The ``afhub`` command line: run the local facility and manage it.

One module per command group, each with a ``register(subparsers)`` that adds its
subcommands; a subcommand sets ``handler`` to a function ``(args, settings) -> int`` (the
exit status). Commands that manage the facility reach its database through
:mod:`afhub.cli.database` only.

- ``afhub up`` (:mod:`afhub.cli.up`), ``afhub users`` (:mod:`afhub.cli.users`)
- ``afhub groups|quota|invite|usage`` (:mod:`~afhub.cli.groups`, :mod:`~afhub.cli.quota`,
  :mod:`~afhub.cli.invite`, :mod:`~afhub.cli.usage`)
- ``afhub resources`` (:mod:`afhub.cli.resources`), ``afhub fit`` (:mod:`afhub.cli.fit`)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from afhub.cli import fit, groups, invite, quota, resources, up, usage, users
from afhub.cli.database import fail
from afhub.settings import SettingsError, load_settings

#: the command groups, in the order ``afhub --help`` lists them
COMMAND_GROUPS = (up, users, groups, quota, invite, usage, resources, fit)


def register_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add every command group's subcommands."""
    for group in COMMAND_GROUPS:
        group.register(subparsers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="afhub", description="Run and manage an afhub analysis facility."
    )
    register_commands(parser.add_subparsers(dest="command", required=True))
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
            return fail(str(exc))
        return args.handler(args, settings)  # 'up' replaces this process, umask included
    finally:
        os.umask(previous)  # for a caller in the same process (tests)


if __name__ == "__main__":
    sys.exit(main())
