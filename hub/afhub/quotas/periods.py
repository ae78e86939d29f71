"""Accounting periods: which window of time a budget (GPU-hours, core-hours) covers.

Two kinds, named by a short spec string stored with each quota:

* ``"month"`` (the default): the calendar month in UTC. Usage resets to zero at
  00:00 UTC on the first of the next month.
* ``"rolling:<n><unit>"`` with unit ``h`` (hours) or ``d`` (days), e.g. ``"rolling:7d"``:
  the last ``n`` hours/days up to now. There is no single reset; usage stops counting as it
  ages out of the window.

All instants are timezone-aware ``datetime`` objects; naive ones are rejected so that no
local-time surprise can creep in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

DEFAULT_PERIOD = "month"
#: the longest rolling window accepted
MAX_ROLLING = timedelta(days=366)

_ROLLING_RE = re.compile(r"rolling:([1-9][0-9]{0,4})([hd])")


class InvalidPeriod(ValueError):
    """A period spec that is not ``month`` or ``rolling:<n>h|d``."""


def _require_aware(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("instants must be timezone-aware (use datetime.now(UTC))")
    return at.astimezone(UTC)


@dataclass(frozen=True)
class Window:
    """The half-open interval ``[start, end)`` a budget covers at some instant.

    ``resets_at`` is when usage goes back to zero (calendar periods) or ``None`` for rolling
    windows, where usage frees continuously as it ages out.
    """

    start: datetime
    end: datetime
    resets_at: datetime | None


@dataclass(frozen=True)
class CalendarMonth:
    """The calendar month (UTC) containing the instant."""

    spec: str = "month"

    def window(self, at: datetime) -> Window:
        at = _require_aware(at)
        start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = (
            start.replace(year=start.year + 1, month=1)
            if start.month == 12
            else start.replace(month=start.month + 1)
        )
        return Window(start=start, end=end, resets_at=end)

    def describe(self) -> str:
        return "calendar month (UTC)"


@dataclass(frozen=True)
class RollingWindow:
    """The last ``length`` of time up to the instant."""

    length: timedelta
    spec: str

    def window(self, at: datetime) -> Window:
        at = _require_aware(at)
        return Window(start=at - self.length, end=at, resets_at=None)

    def describe(self) -> str:
        hours = int(self.length.total_seconds() // 3600)
        if hours % 24 == 0:
            days = hours // 24
            return f"rolling {days} day{'s' if days != 1 else ''}"
        return f"rolling {hours} hour{'s' if hours != 1 else ''}"


Period = CalendarMonth | RollingWindow


def parse_period(spec: object) -> Period:
    """Parse ``"month"`` or ``"rolling:<n>h|d"``; raise :class:`InvalidPeriod` otherwise."""
    if spec is None or spec == DEFAULT_PERIOD:
        return CalendarMonth()
    if not isinstance(spec, str):
        raise InvalidPeriod(
            f"a period must be a string such as 'month' or 'rolling:7d', not {spec!r}"
        )
    match = _ROLLING_RE.fullmatch(spec)
    if not match:
        raise InvalidPeriod(
            f"unknown period {spec[:40]!r}: use 'month' (calendar month, the default) or "
            "'rolling:<n>h' / 'rolling:<n>d' (for example 'rolling:7d')"
        )
    count, unit = int(match.group(1)), match.group(2)
    length = timedelta(hours=count) if unit == "h" else timedelta(days=count)
    if length > MAX_ROLLING:
        raise InvalidPeriod(f"rolling window {spec!r} is longer than the limit of 366 days")
    return RollingWindow(length=length, spec=spec)


def overlap_seconds(start: datetime, stop: datetime, window: Window) -> float:
    """Seconds of ``[start, stop)`` that fall inside ``window``."""
    lo = max(start, window.start)
    hi = min(stop, window.end)
    return max(0.0, (hi - lo).total_seconds())
