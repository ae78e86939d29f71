"""The ledger of Dask clusters on Kubernetes, squared with what the gateway sees.

On Kubernetes the gateway does not start processes: it writes DaskCluster objects (and
their ``spec.replicas``, capped to what the group's limits allow) and dask-gateway's
controller creates the pods. The gateway's informer sees each object's phase; from that
and the ledger's open ``dask`` intervals, :func:`reconcile` (pure: statuses in, ledger
actions out) says which intervals to open, mark running and close:

- a cluster ``Pending`` or ``Running`` holds its scheduler (``CLUSTER/scheduler``), and
  while ``Running`` one worker interval per replica the gateway wrote
  (``CLUSTER/worker-0`` .. ``worker-<replicas-1>``);
- a cluster ``Stopped``/``Failed`` or gone holds nothing: its intervals close.

Workers are charged from the replicas the gateway wrote once the scheduler runs (the
controller may be slower to create the pods; the gap is the pods' start time).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from afhub.services.gateway.admission import scheduler_key, worker_key

#: phases of a DaskCluster (set by dask-gateway's controller) that hold a scheduler
HOLDING = ("Pending", "Running")


@dataclass(frozen=True)
class ClusterState:
    """What the gateway's informer sees of one DaskCluster (``name``: ``NAMESPACE.NAME``)."""

    name: str
    user: str
    group: str
    phase: str
    replicas: int = 0


@dataclass(frozen=True)
class OpenInterval:
    """An open ``dask`` interval of the ledger (``running``: its start is recorded)."""

    id: int
    user: str
    server_name: str
    running: bool


@dataclass(frozen=True)
class Open:
    """Admit a process of a cluster (``running``: and record its start now)."""

    user: str
    group: str
    key: str
    worker: bool
    running: bool


@dataclass(frozen=True)
class MarkRunning:
    interval_id: int


@dataclass(frozen=True)
class Close:
    interval_id: int
    note: str


Action = Open | MarkRunning | Close


def worker_keys(cluster: str, replicas: int) -> list[str]:
    return [worker_key(cluster, f"worker-{i}") for i in range(max(replicas, 0))]


def wanted(state: ClusterState) -> list[str]:
    """The ledger keys ``state`` holds now, scheduler first, workers in order."""
    if state.phase not in HOLDING:
        return []
    keys = [scheduler_key(state.name)]
    if state.phase == "Running":
        keys += worker_keys(state.name, state.replicas)
    return keys


def reconcile(clusters: Iterable[ClusterState], intervals: Sequence[OpenInterval]) -> list[Action]:
    """Ledger actions that make ``intervals`` (the open ``dask`` intervals of the clusters
    in view) match ``clusters``: opens first (scheduler before workers), then marks, then
    closes. An open interval no cluster in view wants is closed."""
    clusters = list(clusters)
    held = {(i.user, i.server_name): i for i in intervals}
    opens: list[Action] = []
    marks: list[Action] = []
    keep = set()
    for state in clusters:
        running = state.phase == "Running"
        for key in wanted(state):
            keep.add((state.user, key))
            interval = held.get((state.user, key))
            if interval is None:
                worker = not key.endswith("/scheduler")
                opens.append(Open(state.user, state.group, key, worker, running))
            elif running and not interval.running:
                marks.append(MarkRunning(interval.id))
    closes: list[Action] = [
        Close(i.id, _close_note(i.server_name, clusters))
        for pair, i in held.items()
        if pair not in keep
    ]
    return opens + marks + closes


def _close_note(key: str, clusters: Iterable[ClusterState]) -> str:
    name = key.split("/", 1)[0]
    for state in clusters:
        if state.name == name:
            if state.phase == "Failed":
                return "cluster failed"
            return "cluster stopped" if state.phase not in HOLDING else "worker stopped"
    return "cluster gone"


def state_of(obj: dict) -> ClusterState:
    """The :class:`ClusterState` of a DaskCluster object as the informer holds it."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    return ClusterState(
        name=f"{meta['namespace']}.{meta['name']}",
        user=spec.get("username", ""),
        group=(spec.get("options") or {}).get("charge_to", ""),
        phase=(obj.get("status") or {}).get("phase", "Pending"),
        replicas=int(spec.get("replicas") or 0) if spec.get("active", True) else 0,
    )
