"""The quota decision, as a pure function (Slurm association-tree semantics).

Usage rolls up from children to every ancestor. An action charged to a group is allowed
only when the charged group *and every ancestor* has room for it. Children may
oversubscribe their parent (their limits may add up to more than the parent's), but the
parent's limit always holds, because the parent is checked too.

* Concurrency limits (servers, GPUs, Dask cores): allowed when held + requested <= limit.
* Budgets (GPU-hours, CPU core-hours per period): allowed while used < limit, for a charge
  that consumes that budget (a CPU-only server is not stopped by a GPU-hour budget). A
  running charge is stopped by the enforcement loop once a budget is spent
  (:func:`exhausted_budgets`, :func:`plan_enforcement`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from afhub.quotas.limits import Charge, LimitName, Limits, Usage
from afhub.quotas.periods import parse_period


@dataclass(frozen=True)
class NodeState:
    """One group on the charged group's chain: its limits and its rolled-up usage."""

    path: str
    limits: Limits
    usage: Usage


@dataclass(frozen=True)
class Refusal:
    """Why a charge does not fit: the group, the limit, used/limit and when it resets."""

    group: str
    limit: LimitName
    used: float
    limit_value: float
    requested: float
    period: str | None
    resets_at: datetime | None
    message: str

    def to_dict(self) -> dict[str, object]:
        return {
            "group": self.group,
            "limit": self.limit.value,
            "used": self.used,
            "limit_value": self.limit_value,
            "requested": self.requested,
            "period": self.period,
            "resets_at": self.resets_at.isoformat() if self.resets_at else None,
            "message": self.message,
        }


@dataclass(frozen=True)
class Decision:
    """The outcome: ``allowed``, or the refusals (the charged group's first, then upwards)."""

    refusals: tuple[Refusal, ...] = field(default_factory=tuple)

    @property
    def allowed(self) -> bool:
        return not self.refusals

    @property
    def message(self) -> str:
        return self.refusals[0].message if self.refusals else "allowed"


def format_amount(value: float) -> str:
    """Integers as they are; fractions with 3 significant digits (0.002, 12.5, 0.0417)."""
    if float(value).is_integer():
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.3g}"


def format_time(at: datetime) -> str:
    """An instant as people read it in messages: ``2026-12-01 00:00 UTC``."""
    return at.strftime("%Y-%m-%d %H:%M UTC")


def _set_limit(node: NodeState, name: LimitName) -> float:
    """The limit ``name`` of ``node``, which the caller found set."""
    limit = node.limits.get(name)
    if limit is None:
        raise ValueError(f"{node.path} has no {name.value} limit")
    return float(limit)


def _budget_refusal(node: NodeState, name: LimitName, now: datetime) -> Refusal:
    period = parse_period(node.limits.period)
    window = period.window(now)
    used = node.usage.get(name)
    limit = _set_limit(node, name)
    if limit == 0:
        when = f"the group has no allowance of {name.label}; its admins can set one"
    elif window.resets_at is not None:
        when = f"it resets at {format_time(window.resets_at)}"
    else:
        when = f"usage frees as it ages out of the {period.describe()} window"
    message = (
        f"group {node.path!r} has used its {name.label} budget for this {period.describe()}: "
        f"{format_amount(used)}/{format_amount(limit)} {name.label} used; {when}"
    )
    return Refusal(
        group=node.path,
        limit=name,
        used=used,
        limit_value=limit,
        requested=0.0,
        period=period.spec,
        resets_at=window.resets_at,
        message=message,
    )


def _holding_refusal(node: NodeState, name: LimitName, requested: float) -> Refusal:
    used = node.usage.get(name)
    limit = _set_limit(node, name)
    if limit == 0:
        tail = f"the group has no allowance for {name.label}; its admins can set one"
    else:
        tail = "room frees when one of the group's running servers or jobs stops"
    if used >= limit:
        state = f"is at its limit of {format_amount(limit)} {name.label}"
    else:
        state = f"allows {format_amount(limit)} {name.label}"
    message = (
        f"group {node.path!r} {state}: {format_amount(used)}/{format_amount(limit)} in use "
        f"and this needs {format_amount(requested)} more; {tail}"
    )
    return Refusal(
        group=node.path,
        limit=name,
        used=used,
        limit_value=limit,
        requested=requested,
        period=None,
        resets_at=None,
        message=message,
    )


_HOLDING_LIMITS = (LimitName.MAX_SERVERS, LimitName.MAX_GPUS, LimitName.MAX_DASK_CORES)
_BUDGET_LIMITS = (LimitName.GPU_HOURS, LimitName.CPU_CORE_HOURS)


def _spent_budgets(node: NodeState, charge: Charge, now: datetime) -> list[Refusal]:
    """The budgets of one node that ``charge`` consumes and that are spent."""
    return [
        _budget_refusal(node, name, now)
        for name in _BUDGET_LIMITS
        if (limit := node.limits.get(name)) is not None
        and charge.rate(name) > 0
        and node.usage.get(name) >= limit
    ]


def node_refusals(node: NodeState, charge: Charge, now: datetime) -> list[Refusal]:
    """Every limit of one node that ``charge`` would break."""
    refusals: list[Refusal] = []
    wanted = charge.holdings
    for name in _HOLDING_LIMITS:
        limit = node.limits.get(name)
        requested = wanted.get(name)
        if limit is not None and requested > 0 and node.usage.get(name) + requested > limit:
            refusals.append(_holding_refusal(node, name, requested))
    return refusals + _spent_budgets(node, charge, now)


def decide(chain: Sequence[NodeState], charge: Charge, now: datetime) -> Decision:
    """Decide whether ``charge`` may start, given the charged group's chain.

    ``chain`` is root first and ends with the charged group; each node's usage must already
    be rolled up over its subtree. Refusals are reported from the charged group upwards.
    """
    if not chain:
        raise ValueError("the chain must contain at least the charged group")
    refusals: list[Refusal] = []
    for node in reversed(chain):
        refusals.extend(node_refusals(node, charge, now))
    return Decision(tuple(refusals))


def exhausted_budgets(chain: Sequence[NodeState], charge: Charge, now: datetime) -> list[Refusal]:
    """Budgets on the chain that ``charge`` (already running) consumes and that are spent.

    Concurrency limits are not re-checked: what is running was admitted within them.
    """
    return [refusal for node in reversed(chain) for refusal in _spent_budgets(node, charge, now)]


class EnforcementAction(enum.StrEnum):
    WARN = "warn"
    STOP = "stop"


@dataclass(frozen=True)
class OverBudget:
    """A running charge whose budget is spent, and when it was first warned (if ever)."""

    interval_id: int
    warned_at: datetime | None
    reason: str


@dataclass(frozen=True)
class EnforcementStep:
    interval_id: int
    action: EnforcementAction
    reason: str


def plan_enforcement(
    over_budget: Iterable[OverBudget], now: datetime, grace: timedelta
) -> list[EnforcementStep]:
    """Warn what is over budget and not yet warned; stop what was warned ``grace`` ago."""
    steps: list[EnforcementStep] = []
    for item in over_budget:
        if item.warned_at is None:
            steps.append(EnforcementStep(item.interval_id, EnforcementAction.WARN, item.reason))
        elif now - item.warned_at >= grace:
            steps.append(EnforcementStep(item.interval_id, EnforcementAction.STOP, item.reason))
    return steps
