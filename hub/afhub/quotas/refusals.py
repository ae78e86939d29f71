"""Quota refusals in plain words: what stopped a person and what they can do about it.

Pure core. :func:`explain` turns a :class:`~afhub.quotas.decisions.Refusal` into two
sentences for the person who asked: what the limit is, then their options, in order:

* charge another of their groups that has room (named; the caller found them);
* wait: for a concurrency limit until something charged to the group stops, for a
  calendar budget until it resets (at a stated time, UTC), for a rolling budget while
  older usage drops out of the window;
* ask an admin of the group whose limit it is (named; the caller looked them up, none
  found: the facility's administrators) to raise the limit.

A limit of 0 is no allowance at all: waiting never helps, so the advice is another group
or an admin. The facts (admins, groups with room) are passed in; nothing is looked up here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from afhub.quotas.decisions import Refusal, format_amount, format_time
from afhub.quotas.limits import Charge, LimitName
from afhub.quotas.periods import RollingWindow, parse_period

#: what a limit of 0 leaves no allowance for, per limit
_NOTHING_OF = {
    LimitName.MAX_SERVERS: "servers",
    LimitName.MAX_GPUS: "GPUs or other accelerators",
    LimitName.MAX_DASK_CORES: "Dask workers",
    LimitName.GPU_HOURS: "GPU time",
    LimitName.CPU_CORE_HOURS: "CPU time",
}
#: what stops and so frees room under a concurrency limit
_FREED_BY = {
    LimitName.MAX_SERVERS: "one of the servers charged to it stops",
    LimitName.MAX_GPUS: "a server holding GPUs charged to it stops",
    LimitName.MAX_DASK_CORES: "Dask workers charged to it stop",
}


#: a concurrency limit's unit, singular and plural
_UNITS = {
    LimitName.MAX_SERVERS: ("server", "servers"),
    LimitName.MAX_GPUS: ("GPU", "GPUs"),
    LimitName.MAX_DASK_CORES: ("Dask core", "Dask cores"),
}


def _amount(value: float, name: LimitName) -> str:
    one, many = _UNITS[name]
    return f"{format_amount(value)} {one if value == 1 else many}"


@dataclass(frozen=True)
class Advice:
    """A refusal for people: ``text`` (plain), and the reset instant it names, if any
    (``reset_text`` is how that instant appears in ``text``, for a page to mark up)."""

    text: str
    resets_at: datetime | None = None
    reset_text: str | None = None


def _names(items: Sequence[str]) -> str:
    quoted = [f"'{item}'" for item in items]
    if len(quoted) <= 2:
        return " or ".join(quoted)
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def limit_reached(refusal: Refusal, what: str = "server") -> str:
    """The first sentence: which group's limit refuses, and how far it is used."""
    group, name = refusal.group, refusal.limit
    limit = format_amount(refusal.limit_value)
    if refusal.limit_value == 0:
        return (
            f"Group '{group}' has no allowance for {_NOTHING_OF[name]}: "
            f"its limit of {name.label} is 0."
        )
    used = format_amount(refusal.used)
    if name.is_budget:
        period = parse_period(refusal.period).describe()
        return (
            f"Group '{group}' has used its {name.label} budget for this {period}: "
            f"{used} of {limit} {name.label} used."
        )
    if refusal.used >= refusal.limit_value:
        return f"Group '{group}' is at its limit of {limit} {name.label}: {used} of {limit} in use."
    return (
        f"Group '{group}' allows {limit} {name.label}: {used} in use, "
        f"and this {what} needs {format_amount(refusal.requested)} more."
    )


def _holding_options(refusal: Refusal) -> list[str]:
    """Asking for less (when less would fit, now or ever) and waiting (when it helps)."""
    left = refusal.limit_value - refusal.used
    if refusal.requested > refusal.limit_value:
        return [f"ask for at most {_amount(refusal.limit_value, refusal.limit)}"]
    options = [f"ask for at most {_amount(left, refusal.limit)} now"] if left >= 1 else []
    return [*options, f"wait until {_FREED_BY[refusal.limit]}"]


def _wait(refusal: Refusal) -> tuple[list[str], str | None]:
    """What else helps than another group or an admin (nothing for a limit of 0), and the
    reset time as written."""
    if refusal.limit_value == 0:
        return [], None
    if not refusal.limit.is_budget:
        return _holding_options(refusal), None
    if refusal.resets_at is not None:
        when = format_time(refusal.resets_at)
        return [f"wait for the reset at {when}"], when
    period = parse_period(refusal.period)
    days = period.describe() if isinstance(period, RollingWindow) else "budget's"
    return [f"wait while older usage drops out of the {days} window"], None


def after_granting(refusal: Refusal, per_unit: Charge, granted: int) -> Refusal:
    """``refusal`` of ``granted + 1`` units of a request (workers of a scaled Dask cluster,
    say) as it reads once the ``granted`` units that fit hold their room: a concurrency
    limit then has their share more in use, and only one more unit is asked for. A budget's
    refusal is unchanged (its use is time already spent)."""
    if refusal.limit.is_budget:
        return refusal
    share = per_unit.holdings.get(refusal.limit)
    return replace(refusal, used=refusal.used + share * granted, requested=share)


def explain(
    refusal: Refusal,
    *,
    what: str = "server",
    admins: Sequence[str] = (),
    alternatives: Sequence[str] = (),
    opening: bool = True,
) -> Advice:
    """``refusal`` for the person who asked to start ``what`` (a server, a Dask cluster).

    ``admins``: the admins of the refusing group (or of the nearest group above it that
    has any); ``alternatives``: the person's other groups that have room for the same
    request now. ``opening=False`` leaves out the first sentence ("You cannot start this
    ..."), for a refusal that follows a sentence of its own (a capped scale request)."""
    options = []
    if alternatives:
        options.append(f"charge it to another of your groups with room: {_names(alternatives)}")
    wait, reset_text = _wait(refusal)
    options.extend(wait)
    if admins:
        whom = f"an admin of '{refusal.group}' ({', '.join(admins)})"
    else:
        whom = "the facility's administrators"
    if refusal.limit_value == 0:
        options.append(f"ask {whom} for an allowance")
    else:
        options.append(f"ask {whom} to raise the limit")
    if len(options) > 1:
        options[-1] = f"or {options[-1]}"
    joiner = ", " if len(options) > 2 else " "
    text = f"{limit_reached(refusal, what)} You can {joiner.join(options)}."
    if opening:
        text = f"You cannot start this {what}. {text}"
    return Advice(text=text, resets_at=refusal.resets_at, reset_text=reset_text)
