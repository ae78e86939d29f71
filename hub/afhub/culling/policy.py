"""The culling decision for one server, and the kind of each running server."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

#: the kind of a server whose resource is unknown (the built-in local CPU server, a
#: resource removed from the registry since, a server started with charging off)
DEFAULT_KIND = "cpu"


@dataclass(frozen=True)
class CullPolicy:
    """How long a server of each kind may stay idle, and how old any server may get.

    ``timeouts`` maps a kind (``cpu``, ``gpu``, ``fpga``) to seconds of inactivity after
    which a server of that kind is culled; 0 means servers of that kind are never culled
    for being idle. A kind missing from ``timeouts`` gets the ``cpu`` timeout.
    ``max_age``: seconds after its start at which any server is culled, active or not
    (0: no maximum age).
    """

    timeouts: Mapping[str, float]
    max_age: float = 0

    def __post_init__(self) -> None:
        if DEFAULT_KIND not in self.timeouts:
            raise ValueError(f"a culling policy needs a timeout for {DEFAULT_KIND!r} servers")
        for kind, seconds in self.timeouts.items():
            if seconds < 0:
                raise ValueError(f"the idle timeout of {kind} servers must be >= 0 seconds")
        if self.max_age < 0:
            raise ValueError("the maximum server age must be >= 0 seconds")

    def timeout_for(self, kind: str) -> float:
        return self.timeouts.get(kind, self.timeouts[DEFAULT_KIND])


@dataclass(frozen=True)
class ServerActivity:
    """What the hub knows about one running server."""

    user: str
    server_name: str
    kind: str
    last_activity: datetime | None
    started: datetime | None


@dataclass(frozen=True)
class CullDecision:
    """Whether to cull; ``reason`` (``idle`` or ``max_age``) and the figures it used."""

    cull: bool
    reason: str
    idle: timedelta | None
    age: timedelta | None
    timeout: float

    def describe(self, server: ServerActivity) -> str:
        """One log line: who, which server, which kind, how long idle, why."""
        name = server.server_name or "(default)"
        idle = _hms(self.idle)
        if self.reason == "max_age":
            why = f"age {_hms(self.age)} reached the maximum age"
        else:
            why = f"idle for {idle}, past the {server.kind} timeout of {self.timeout:g} s"
        return f"user {server.user} server {name} kind {server.kind} idle {idle}: {why}"


def _hms(delta: timedelta | None) -> str:
    if delta is None:
        return "unknown"
    seconds = max(0, int(delta.total_seconds()))
    return f"{seconds // 3600:02}:{seconds % 3600 // 60:02}:{seconds % 60:02}"


def decide(server: ServerActivity, policy: CullPolicy, now: datetime) -> CullDecision:
    """Cull ``server`` when it has been idle for at least its kind's timeout, or is older
    than the maximum age.

    Idle time counts from the last activity the hub recorded, or from the start when the
    hub has recorded none yet (as jupyterhub-idle-culler does). A server with neither is
    never culled: nothing says how long it has been idle.
    """
    age = now - server.started if server.started is not None else None
    idle = now - server.last_activity if server.last_activity is not None else age
    timeout = policy.timeout_for(server.kind)
    if idle is not None and timeout > 0 and idle.total_seconds() >= timeout:
        return CullDecision(True, "idle", idle, age, timeout)
    if policy.max_age > 0 and age is not None and age.total_seconds() >= policy.max_age:
        return CullDecision(True, "max_age", idle, age, timeout)
    return CullDecision(False, "", idle, age, timeout)


def kind_of(resource: str | None, kinds: Mapping[str, str]) -> str:
    """The kind of a server on ``resource`` (a registry resource name); ``cpu`` when the
    registry does not know the resource."""
    if not resource:
        return DEFAULT_KIND
    return kinds.get(resource, DEFAULT_KIND)


def server_kinds(
    open_servers: Iterable[tuple[str, str, str]], kinds: Mapping[str, str]
) -> dict[tuple[str, str], str]:
    """``(user, server name) -> kind`` for the open ledger intervals of servers, given as
    ``(user, server name, resource)``, and the registry's ``resource -> kind``."""
    return {(user, name): kind_of(resource, kinds) for user, name, resource in open_servers}
