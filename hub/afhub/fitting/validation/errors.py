"""What validation raises, and the small helpers every check uses to word its message."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ValidationError(ValueError):
    """A request that cannot be served as sent; ``message`` is safe to show to its sender."""

    def __init__(self, message: str, field: str | None = None, status: int = 400):
        super().__init__(message)
        self.message = message
        self.field = field
        #: the HTTP status to answer with: 413 for a request over a size or work limit
        self.status = status

    def to_dict(self) -> dict[str, Any]:
        """JSON body for a 4xx answer."""
        return {"error": "invalid_request", "message": self.message, "field": self.field}


def short(value: Any, limit: int = 120) -> str:
    """``value`` (repr unless a string) cut to ``limit`` characters, for a message."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_known(given: Iterable[str], known: Iterable[str], what: str, field: str) -> None:
    """Refuse keys of ``given`` not in ``known``, naming them (``what``: "setting(s)")."""
    known = sorted(known)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValidationError(
            f"unknown {what}: {', '.join(short(k, 40) for k in unknown)}; known: "
            f"{', '.join(known)}",
            field=field,
        )


def is_number(value: Any) -> bool:
    """An int or float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)
