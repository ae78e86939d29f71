"""The parser of every ``afhub`` command: a usage error is one line that says where to
read more, like every other refusal of the CLI."""

from __future__ import annotations

import argparse
from typing import NoReturn


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line: ``afhub groups create: the following
    arguments are required: PATH (see `afhub groups create --help`)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def paragraph(doc: str | None, index: int) -> str:
    """Paragraph ``index`` of a module docstring as a command's description (single
    backticks: it is read in a terminal, not rendered)."""
    return (doc or "").split("\n\n")[index].replace("``", "`")
