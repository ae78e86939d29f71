"""How the CLI prints numbers."""

from __future__ import annotations


def number(value: float | None) -> str:
    """A limit or usage figure: ``-`` for none, an integer without decimals, else two
    decimals, or two significant digits where two decimals would hide it (0.001, not
    0.00)."""
    if value is None:
        return "-"
    value = float(value)
    if value.is_integer():
        return str(int(value))
    if round(value, 2) == 0:
        return f"{value:.2g}"
    return f"{value:.2f}"
