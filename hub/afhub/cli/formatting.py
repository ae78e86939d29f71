"""How the CLI prints numbers."""

from __future__ import annotations


def number(value: float | None) -> str:
    """A limit or usage figure: ``-`` for none, an integer without decimals, else two."""
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.2f}"
