"""Devices of the local machine and accelerator slots of the registry's resources.

Pure core: no JupyterHub, no database, no processes (the caller runs ``nvidia-smi -L``
and passes its output in).

* A resource's accelerators are *slots* ``0 .. node_count * count_per_node - 1``; slot
  ``s`` is device ``s % count_per_node`` of node ``s // count_per_node``. A server holds
  whole slots, exclusively (:func:`choose_slots` picks the lowest free ones).
* In local mode a slot is a *real* device when the resource is mapped to this machine's
  devices (the built-in ``local-gpu`` resource, or an operator's mapping), else it is
  *simulated*: nothing is attached and the server is told so (:func:`device_environment`).
* :func:`local_resources` describes this machine as registry resources: ``local-cpu``
  (its cores and memory) and, when ``nvidia-smi -L`` lists GPUs, ``local-gpu``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from afhub.registry.model import Provider, Resource

LOCAL_PROVIDER = "local"
LOCAL_CPU = "local-cpu"
LOCAL_GPU = "local-gpu"
#: pseudo-group given to the built-in local resources: not a valid group path, so no
#: registry entry can name it; every user is treated as a member
EVERYONE = ":everyone"
#: ``nvidia-smi -L`` lines of whole GPUs (MIG devices are indented lines, not matched)
_NVIDIA_SMI_GPU = re.compile(r"GPU (\d+): (.+?) \(UUID: (GPU-[0-9a-fA-F-]+)\)")


class NoFreeDevice(Exception):
    """Every slot of the resource is held; ``str()`` says which and how to go on."""


@dataclass(frozen=True)
class LocalGpu:
    index: int
    model: str
    uuid: str


def parse_nvidia_smi_list(text: str) -> list[LocalGpu]:
    """The GPUs in the output of ``nvidia-smi -L`` (whole GPUs, in index order)."""
    gpus = []
    for line in text.splitlines():
        match = _NVIDIA_SMI_GPU.fullmatch(line.strip())
        if match:
            gpus.append(LocalGpu(int(match.group(1)), match.group(2), match.group(3)))
    return sorted(gpus, key=lambda g: g.index)


def capacity(resource: Resource) -> int:
    """Accelerator slots of ``resource`` (0 for a CPU resource)."""
    if not resource.is_accelerated:
        return 0
    return resource.node_count * resource.count_per_node


def choose_slots(total: int, taken: Iterable[int], count: int) -> list[int] | None:
    """The ``count`` lowest free slots of ``total``, or ``None`` when fewer are free."""
    if count < 0:
        raise ValueError("count must not be negative")
    held = set(taken)
    free = [s for s in range(total) if s not in held]
    return free[:count] if len(free) >= count else None


def busy_message(resource: Resource, total: int, held: int, wanted: int) -> str:
    """Why a spawn gets no device, for people: what is held, what to do."""
    unit = "FPGA" if resource.kind == "fpga" else "GPU"
    return (
        f"no free {unit} on resource {resource.name!r} ({resource.accelerator}): "
        f"{held} of {total} in use and this server needs {wanted}; try again when one is "
        "released (a server stops), or choose fewer"
    )


def device_environment(
    resource: Resource | None,
    slots: Sequence[int],
    real: Sequence[str] | None = None,
) -> dict[str, str]:
    """Environment that tells a local server what it holds.

    * ``AFHUB_DEVICES``: the held slots, comma-separated (empty for a CPU server);
    * ``AFHUB_DEVICES_SIMULATED``: ``1`` when those slots are simulated, else ``0``;
    * ``CUDA_VISIBLE_DEVICES``: the real GPUs held (``real[slot]``: indices or UUIDs);
      the empty string otherwise, so that a server never sees a GPU it does not hold.
    """
    env = {
        "AFHUB_DEVICES": ",".join(str(s) for s in slots),
        "AFHUB_DEVICES_SIMULATED": "0",
        "CUDA_VISIBLE_DEVICES": "",
    }
    if resource is None or not resource.is_accelerated or not slots:
        return env
    if real is None:
        env["AFHUB_DEVICES_SIMULATED"] = "1"
        return env
    if len(real) < capacity(resource):
        raise ValueError(
            f"resource {resource.name!r} has {capacity(resource)} slots but is mapped to "
            f"{len(real)} real devices"
        )
    if resource.kind == "gpu":
        env["CUDA_VISIBLE_DEVICES"] = ",".join(real[s] for s in slots)
    return env


def _mebibytes(n: int) -> str:
    return f"{max(1, n // 2**20)}Mi"


def local_provider() -> Provider:
    return Provider(name=LOCAL_PROVIDER, institution="this machine")


def local_resources(
    cores: int, memory_bytes: int, gpus: Sequence[LocalGpu] = (), image: str = "local"
) -> dict[str, Resource]:
    """This machine as registry resources, open to everyone (:data:`EVERYONE`)."""
    machine: dict = {
        "provider": LOCAL_PROVIDER,
        "site": "this machine",
        "image": image,
        "cpu_per_node": max(1, cores),
        "memory_per_node": _mebibytes(memory_bytes),
        "allowed_groups": (EVERYONE,),
    }
    out = {
        LOCAL_CPU: Resource(
            name=LOCAL_CPU,
            kind="cpu",
            description=(
                f"CPU on this machine ({max(1, cores)} cores, "
                f"{memory_bytes / 2**30:.0f} GiB), shared by every server."
            ),
            **machine,
        )
    }
    if gpus:
        models = sorted({g.model for g in gpus})
        out[LOCAL_GPU] = Resource(
            name=LOCAL_GPU,
            kind="gpu",
            count_per_node=len(gpus),
            accelerator=" / ".join(models),
            extended_resource="nvidia.com/gpu",
            description=f"Real NVIDIA GPUs of this machine ({len(gpus)}: {', '.join(models)}).",
            **machine,
        )
    return out


def real_device_ids(gpus: Sequence[LocalGpu]) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` entries of the local GPUs, slot order (their indices)."""
    return [str(g.index) for g in gpus]


def compose(
    registered: Mapping[str, Resource],
    user_groups: Iterable[str],
    local: Mapping[str, Resource],
) -> dict[str, Resource]:
    """The resources a local-mode user chooses from, in display order: ``local-cpu``
    first unless the registry gives the user a CPU resource, then the registry's
    resources, then ``local-gpu``. Registered resources keep their own group checks."""
    from afhub.registry.model import expand_groups

    groups = expand_groups(user_groups)
    usable = {name: r for name, r in registered.items() if not groups.isdisjoint(r.allowed_groups)}
    out: dict[str, Resource] = {}
    if LOCAL_CPU in local and not any(r.kind == "cpu" for r in usable.values()):
        out[LOCAL_CPU] = local[LOCAL_CPU]
    out.update(registered)
    for name, resource in local.items():
        if name != LOCAL_CPU and name not in registered:
            out[name] = resource
    return out
