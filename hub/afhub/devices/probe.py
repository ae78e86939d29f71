"""This machine's NVIDIA GPUs, found by running ``nvidia-smi -L`` (the one GPU probe).

Servers (:mod:`afhub.spawners.profiles`) and Dask GPU workers
(:mod:`afhub.services.gateway.workers`) see the same machine through
:func:`machine_resources`: ``local-cpu`` and, when GPUs are listed, ``local-gpu``, with
the ``CUDA_VISIBLE_DEVICES`` ids of the GPUs in slot order.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from afhub.devices import (
    LOCAL_GPU,
    LocalGpu,
    local_resources,
    parse_nvidia_smi_list,
    real_device_ids,
)
from afhub.registry.model import Resource


def probe_gpus(command: str = "nvidia-smi") -> tuple[LocalGpu, ...]:
    """The GPUs ``command -L`` lists; none when the command is missing or fails."""
    if not command or shutil.which(command) is None:
        return ()
    try:
        out = subprocess.run(
            [command, "-L"], capture_output=True, text=True, timeout=15, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(parse_nvidia_smi_list(out))


def memory_bytes() -> int:
    """This machine's physical memory."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def machine_resources(command: str = "nvidia-smi") -> tuple[dict[str, Resource], tuple[str, ...]]:
    """This machine as registry resources (``local-cpu``, ``local-gpu`` when ``command``
    lists GPUs) and the ``CUDA_VISIBLE_DEVICES`` ids of its GPUs, in slot order."""
    gpus = probe_gpus(command)
    resources = local_resources(os.cpu_count() or 1, memory_bytes(), gpus)
    return resources, tuple(real_device_ids(gpus))


def machine_gpus(command: str = "nvidia-smi") -> tuple[dict[str, Resource], list[str]]:
    """This machine's GPUs as the ``local-gpu`` resource (none when ``command -L`` is
    missing, fails or lists no GPU) and their ``CUDA_VISIBLE_DEVICES`` ids."""
    resources, ids = machine_resources(command)
    if LOCAL_GPU not in resources:
        return {}, []
    return {LOCAL_GPU: resources[LOCAL_GPU]}, list(ids)
