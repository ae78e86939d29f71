"""afhub's gateway backend on Kubernetes (:mod:`afhub.services.gateway.kube`) without a
cluster: the pure reconcile of DaskCluster phases with the ledger; the DaskCluster object
the backend writes, turned into the worker pod by dask-gateway's own controller code; the
replicas capped by the group's Dask-cores limit and the ledger charged on the facility
database (SQLite; PostgreSQL with AFHUB_TEST_POSTGRES_URL) through the same ledger calls.
The upstream informer is the real class with its cache filled as the API server would;
no Kubernetes API server is contacted (what is not tested: docs/dask.md)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from dask_gateway_server.backends.kubernetes.backend import KubeClusterConfig
from dask_gateway_server.backends.kubernetes.controller import KubeController
from dask_gateway_server.backends.kubernetes.utils import Informer
from dask_gateway_server.models import Cluster, ClusterStatus

from afhub.services.gateway.kube import AfhubKubeBackend
from afhub.services.gateway.kube_ledger import (
    Close,
    ClusterState,
    MarkRunning,
    Open,
    OpenInterval,
    reconcile,
    state_of,
)
from afhub.services.gateway.workers import WorkerCharging

GROUP = "cms/students"
NAME = "afhub.c0ffee"
#: dask-gateway's controller, whose code builds the pods from a DaskCluster's config
CONTROLLER = KubeController(gateway_instance="afhub-dask-gateway")


def test_reconcile_opens_marks_and_closes():
    pending = ClusterState(NAME, "ann", GROUP, "Pending", replicas=3)
    assert reconcile([pending], []) == [
        Open("ann", GROUP, f"{NAME}/scheduler", worker=False, running=False)
    ]
    running = ClusterState(NAME, "ann", GROUP, "Running", replicas=2)
    held = [OpenInterval(1, "ann", f"{NAME}/scheduler", running=False)]
    assert reconcile([running], held) == [
        Open("ann", GROUP, f"{NAME}/worker-0", worker=True, running=True),
        Open("ann", GROUP, f"{NAME}/worker-1", worker=True, running=True),
        MarkRunning(1),
    ]
    # scaled down to one: the second worker's interval closes, nothing else changes
    held = [
        OpenInterval(1, "ann", f"{NAME}/scheduler", running=True),
        OpenInterval(2, "ann", f"{NAME}/worker-0", running=True),
        OpenInterval(3, "ann", f"{NAME}/worker-1", running=True),
    ]
    one = ClusterState(NAME, "ann", GROUP, "Running", replicas=1)
    assert reconcile([one], held) == [Close(3, "worker stopped")]
    failed = ClusterState(NAME, "ann", GROUP, "Failed", replicas=1)
    assert reconcile([failed], held) == [Close(i, "cluster failed") for i in (1, 2, 3)]
    # a cluster gone from the API server (deleted) holds nothing
    assert reconcile([], held[:1]) == [Close(1, "cluster gone")]


def test_state_of_an_object_as_the_informer_holds_it():
    obj = _object("ann", replicas=4, phase="Running")
    assert state_of(obj) == ClusterState(NAME, "ann", GROUP, "Running", 4)
    obj["spec"]["active"] = False  # being stopped: no workers held
    assert state_of(obj).replicas == 0
    assert state_of({"metadata": {"namespace": "a", "name": "b"}}).phase == "Pending"


@pytest.fixture
def backend(stores):
    stores.groups.create("cms")
    stores.groups.create(GROUP)
    stores.groups.add_member(GROUP, "ann")
    stores.quotas.set(GROUP, {"max_dask_cores": 5})
    stores.registry.add_provider({"name": "lab", "institution": "A Lab"})
    stores.registry.add_resource(
        {
            "name": "a100-mig",
            "provider": "lab",
            "site": "here",
            "kind": "gpu",
            "accelerator": "NVIDIA A100",
            "count_per_node": 7,
            "cpu_per_node": 8,
            "memory_per_node": "64Gi",
            "extended_resource": "nvidia.com/mig-1g.10gb",
            "node_selector": {"afhub.io/gpu": "a100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            "image": "ghcr.io/afhub/notebook-gpu:1",
            "allowed_groups": ["cms"],
        }
    )
    gateway = AfhubKubeBackend(gateway_instance="afhub-dask-gateway")
    gateway.stores = stores
    gateway.workers = WorkerCharging(stores)
    gateway.informer = Informer(name="cluster")
    gateway.informer.cache = {}
    gateway.clusters = {}
    return gateway


def _object(user, replicas=0, phase="Pending", options=None, config=None):
    return {
        "metadata": {"namespace": "afhub", "name": "c0ffee", "creationTimestamp": "x"},
        "spec": {
            "username": user,
            "options": {"charge_to": GROUP, **(options or {})},
            "config": config or {"worker_cores": 1},
            "replicas": replicas,
        },
        "status": {"phase": phase},
    }


def _seen(gateway, obj):
    """What the upstream backend's sync puts in its caches for ``obj``."""
    gateway.informer.cache[NAME] = obj
    gateway.clusters[NAME] = Cluster(
        name=NAME,
        username=obj["spec"]["username"],
        token="",
        options=obj["spec"]["options"],
        config=obj["spec"]["config"],
        status=ClusterStatus.from_name(obj["status"]["phase"]),
    )


def test_gpu_worker_object_becomes_a_pod_on_its_registry_resource(backend):
    config = KubeClusterConfig(worker_cores=2, worker_memory="4 G", namespace="afhub")
    options = {"charge_to": GROUP, "worker_gpus": 1, "gpu_resource": "a100-mig"}
    obj = backend.make_cluster_object("ann", options, config)
    assert obj["kind"] == "DaskCluster"
    assert obj["metadata"]["labels"]["gateway.dask.org/instance"] == "afhub-dask-gateway"
    # the controller reads the config back as a KubeClusterConfig and builds the pod
    pod_config = KubeClusterConfig(**obj["spec"]["config"])
    pod = CONTROLLER.make_pod("afhub", obj["metadata"]["name"], pod_config, is_worker=True)
    worker = pod["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == "1"
    assert worker["image"] == "ghcr.io/afhub/notebook-gpu:1"  # the resource's image
    assert worker["resources"]["requests"]["cpu"] == "2.000"  # upstream's own, kept
    assert pod["spec"]["nodeSelector"] == {"afhub.io/gpu": "a100"}
    assert pod["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists"}]
    cpu_obj = backend.make_cluster_object("ann", {"charge_to": GROUP}, config)
    cpu_pod = CONTROLLER.make_pod(
        "afhub", "c", KubeClusterConfig(**cpu_obj["spec"]["config"]), True
    )
    assert "nvidia.com/mig-1g.10gb" not in str(cpu_pod)


def test_replicas_capped_and_ledger_charged_from_the_phases(backend, stores):
    # the scheduler (1 core) is admitted when the cluster is created; 4 of the group's 5
    # Dask cores are left for 1-core workers
    _seen(backend, _object("ann", replicas=0, phase="Pending"))
    asyncio.run(backend.square_ledger(NAME))
    (scheduler,) = stores.ledger.open_intervals("dask")
    assert (scheduler.server_name, scheduler.group, scheduler.start) == (
        f"{NAME}/scheduler",
        GROUP,
        None,
    )
    granted, notice = asyncio.run(backend.capped(NAME, 10))
    assert granted == 4
    assert "runs 4 workers instead" in notice
    # the refusal in plain words, as it reads once the 4 run (explain, what="Dask cluster")
    assert "Group 'cms/students' is at its limit of 5 concurrent Dask cores: 5 of 5" in notice
    assert "You can wait until Dask workers charged to it stop" in notice
    assert asyncio.run(backend.capped(NAME, 3)) == (3, "")
    # the gateway wrote 4 replicas and the scheduler runs: four worker intervals, started
    _seen(backend, _object("ann", replicas=4, phase="Running"))
    asyncio.run(backend.square_ledger(NAME))
    held = {i.server_name: i for i in stores.ledger.open_intervals("dask")}
    assert sorted(held) == [f"{NAME}/scheduler"] + [f"{NAME}/worker-{i}" for i in range(4)]
    assert all(i.start is not None for i in held.values())
    # nothing more fits now: a request for more is held at the replicas already written
    assert asyncio.run(backend.capped(NAME, 6))[0] == 4
    # stopped: every interval closes
    _seen(backend, _object("ann", replicas=4, phase="Stopped"))
    asyncio.run(backend.square_ledger(NAME))
    assert stores.ledger.open_intervals("dask") == []


def test_spent_budget_warns_the_clusters_on_kubernetes(backend, stores):
    """The budget enforcement shared with the local backend sees a Kubernetes cluster
    (``NAMESPACE.NAME``) as running from the informer's view and warns it first."""
    stores.quotas.set(GROUP, {"cpu_core_hours": 0.001})
    backend._notices = {}
    _seen(backend, _object("ann", replicas=0, phase="Running"))
    asyncio.run(backend.square_ledger(NAME))
    later = datetime.now(UTC) + timedelta(hours=1)
    assert asyncio.run(backend.enforce_budgets(later)) == [f"warned {NAME}"]
    assert "over budget" in backend._notices[NAME]
    assert backend._running(NAME)
    _seen(backend, _object("ann", replicas=0, phase="Stopped"))
    assert not backend._running(NAME)
