"""What a quota limits, what a group uses, and what an action charges.

A :class:`Charge` is the general charging interface shared by servers, Dask clusters and
fit jobs: a resource kind plus the amounts held while it runs. Held amounts count against
the concurrency limits (servers, GPUs, Dask cores) for as long as the charge is open, and
accrue into the per-period budgets at one core-hour per core per hour and one GPU-hour
per GPU per hour.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from afhub.quotas.periods import DEFAULT_PERIOD, parse_period


class InvalidQuota(ValueError):
    """A quota value that is negative, not a number, or unknown."""


class ChargeKind(enum.StrEnum):
    SERVER = "server"
    DASK = "dask"
    FIT = "fit"


class LimitName(enum.StrEnum):
    """The limits a quota may set, named as in the API and the CLI."""

    GPU_HOURS = "gpu_hours"
    CPU_CORE_HOURS = "cpu_core_hours"
    MAX_SERVERS = "max_servers"
    MAX_GPUS = "max_gpus"
    MAX_DASK_CORES = "max_dask_cores"

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def is_budget(self) -> bool:
        """Budgets accrue over a period; the others are concurrent holdings."""
        return self in (LimitName.GPU_HOURS, LimitName.CPU_CORE_HOURS)


_LABELS = {
    LimitName.GPU_HOURS: "GPU-hours",
    LimitName.CPU_CORE_HOURS: "CPU core-hours",
    LimitName.MAX_SERVERS: "concurrent servers",
    LimitName.MAX_GPUS: "concurrent GPUs",
    LimitName.MAX_DASK_CORES: "concurrent Dask cores",
}
_INTEGER_LIMITS = {LimitName.MAX_SERVERS, LimitName.MAX_GPUS}
#: largest value accepted for any limit (guards against typos such as 1e300)
MAX_LIMIT_VALUE = 1e9


@dataclass(frozen=True)
class Limits:
    """One group's quota. ``None`` means no limit at this node."""

    gpu_hours: float | None = None
    cpu_core_hours: float | None = None
    max_servers: int | None = None
    max_gpus: int | None = None
    max_dask_cores: float | None = None
    period: str = DEFAULT_PERIOD

    def get(self, name: LimitName) -> float | None:
        return getattr(self, name.value)

    def to_dict(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def is_unlimited(self) -> bool:
        return all(self.get(name) is None for name in LimitName)


def _parse_limit_value(name: LimitName, value: object) -> float | int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise InvalidQuota(f"{name.value} must be a number or null, not {value!r}")
    if isinstance(value, str):
        text = value
        try:
            value = float(text.strip())
        except ValueError:
            raise InvalidQuota(f"{name.value} must be a number, not {text[:40]!r}") from None
    if not math.isfinite(value):
        raise InvalidQuota(f"{name.value} must be a finite number, not {value!r}")
    if name in _INTEGER_LIMITS and (value < 0 or float(value) != int(value)):
        raise InvalidQuota(f"{name.value} must be a whole number >= 0 (got {value:g})")
    if value < 0:
        raise InvalidQuota(f"{name.value} must not be negative (got {value:g})")
    if value > MAX_LIMIT_VALUE:
        raise InvalidQuota(f"{name.value} must be at most {MAX_LIMIT_VALUE:g} (got {value:g})")
    if name in _INTEGER_LIMITS:
        return int(value)
    return float(value)


def parse_limits(values: Mapping[str, object], base: Limits | None = None) -> Limits:
    """Build :class:`Limits` from user input, on top of ``base`` (keys absent keep base's).

    Raises :class:`InvalidQuota` naming the offending key for unknown keys, negative,
    non-numeric, non-finite or fractional-count values and unknown periods.
    """
    if not isinstance(values, Mapping):
        raise InvalidQuota("quota must be an object of limit names to numbers")
    known = {n.value for n in LimitName} | {"period"}
    unknown = sorted(str(k) for k in values if k not in known)
    if unknown:
        raise InvalidQuota(
            f"unknown quota field(s) {', '.join(unknown)}: use {', '.join(sorted(known))}"
        )
    changes: dict[str, Any] = {}  # Limits fields by name: numbers, None, the period
    for name in LimitName:
        if name.value in values:
            changes[name.value] = _parse_limit_value(name, values[name.value])
    if "period" in values:
        spec = values["period"]
        try:
            period = parse_period(spec)
        except ValueError as exc:
            raise InvalidQuota(str(exc)) from None
        changes["period"] = period.spec
    return replace(base or Limits(), **changes)


def ceiling_of(chain: Sequence[tuple[str, Limits]]) -> dict[LimitName, tuple[float, str]]:
    """The effective limits along ``chain`` (``(path, limits)`` pairs): for each limit, the
    lowest value set on any node, with the path of the node that sets it."""
    ceiling: dict[LimitName, tuple[float, str]] = {}
    for path, limits in chain:
        for name in LimitName:
            value = limits.get(name)
            if value is not None and (name not in ceiling or value < ceiling[name][0]):
                ceiling[name] = (value, path)
    return ceiling


def check_within(limits: Limits, ceiling: Mapping[LimitName, tuple[float, str]]) -> None:
    """Raise :class:`InvalidQuota` if any limit set in ``limits`` exceeds the ``ceiling``.

    Group admins set quotas within their own: a subgroup's limit may not be higher than the
    effective limit above it (children may oversubscribe a parent in sum, never singly).
    An unset limit under a set ceiling is fine: the ceiling still holds through the chain.
    """
    for name in LimitName:
        mine = limits.get(name)
        if mine is None or name not in ceiling:
            continue
        top, group = ceiling[name]
        if mine > top:
            raise InvalidQuota(
                f"{name.value}={mine:g} is above the {top:g} {name.label} that applies from "
                f"group {group!r}; a group admin sets quotas within their own"
            )


@dataclass(frozen=True)
class Charge:
    """What an action holds while it runs, charged to one group.

    ``kind`` says what it is (a server, a Dask cluster, a fit job); ``resource`` names the
    profile or cluster option it came from (for the ledger only).
    """

    kind: ChargeKind
    cpu_cores: float = 0.0
    gpus: int = 0
    resource: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", ChargeKind(self.kind))
        if not (isinstance(self.cpu_cores, (int, float)) and math.isfinite(self.cpu_cores)):
            raise InvalidQuota(f"cpu_cores must be a finite number, not {self.cpu_cores!r}")
        if self.cpu_cores < 0:
            raise InvalidQuota(f"cpu_cores must not be negative (got {self.cpu_cores!r})")
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or self.gpus < 0:
            raise InvalidQuota(f"gpus must be a whole number >= 0 (got {self.gpus!r})")

    @property
    def holdings(self) -> Holdings:
        """What this charge holds concurrently while open."""
        return Holdings(
            servers=1 if self.kind == ChargeKind.SERVER else 0,
            gpus=self.gpus,
            dask_cores=self.cpu_cores if self.kind == ChargeKind.DASK else 0.0,
        )

    def rate(self, name: LimitName) -> float:
        """Budget accrued per hour of running, for a budget limit."""
        if name == LimitName.GPU_HOURS:
            return float(self.gpus)
        if name == LimitName.CPU_CORE_HOURS:
            return float(self.cpu_cores)
        raise ValueError(f"{name} is not a budget")


@dataclass(frozen=True)
class Holdings:
    """Concurrent holdings: what is running (or being started) right now."""

    servers: int = 0
    gpus: int = 0
    dask_cores: float = 0.0

    def __add__(self, other: Holdings) -> Holdings:
        return Holdings(
            self.servers + other.servers,
            self.gpus + other.gpus,
            self.dask_cores + other.dask_cores,
        )

    def __sub__(self, other: Holdings) -> Holdings:
        return Holdings(
            self.servers - other.servers,
            self.gpus - other.gpus,
            self.dask_cores - other.dask_cores,
        )

    def get(self, name: LimitName) -> float:
        return {
            LimitName.MAX_SERVERS: self.servers,
            LimitName.MAX_GPUS: self.gpus,
            LimitName.MAX_DASK_CORES: self.dask_cores,
        }[name]


@dataclass(frozen=True)
class Usage:
    """A group's usage rolled up over its subtree: budgets in the current period and
    concurrent holdings now."""

    gpu_hours: float = 0.0
    cpu_core_hours: float = 0.0
    holdings: Holdings = field(default_factory=Holdings)

    def get(self, name: LimitName) -> float:
        if name == LimitName.GPU_HOURS:
            return self.gpu_hours
        if name == LimitName.CPU_CORE_HOURS:
            return self.cpu_core_hours
        return self.holdings.get(name)
