"""AfhubKubeSpawner: pod manifests per profile, without a cluster, validated against 1.33.

As the field guide says: ``load_config`` is patched out, ``KubeSpawner(_mock=True)``,
``await spawner.load_user_options()``, ``await spawner.get_pod_manifest()``, then the pod
is serialised and checked with ``kubernetes-validate`` (Kubernetes 1.33, strict).
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import kubernetes_validate
import pytest
from kubernetes_asyncio.client import ApiClient
from tornado import web

from afhub.spawners.kube import AfhubKubeSpawner

EXAMPLE = str(Path(__file__).parents[1] / "registry" / "example.yaml")
K8S_VERSION = "1.33.0"
#: manifests only: no facility database (charging is tested in tests/spawners)
NO_DB = {"charging": False}


def make_user(name: str, groups) -> SimpleNamespace:
    return SimpleNamespace(
        name=name,
        id=1,
        url=f"/user/{name}/",
        groups=[SimpleNamespace(name=g) for g in groups],
    )


async def manifest(name="alice", groups=("atlas",), options=None, **traits) -> dict:
    with mock.patch("kubespawner.spawner.load_config"):
        spawner = AfhubKubeSpawner(
            _mock=True, user=make_user(name, groups), **{"registry": EXAMPLE, **NO_DB, **traits}
        )
    spawner.user_options = dict(options or {})
    await spawner.load_user_options()
    pod = await spawner.get_pod_manifest()
    async with ApiClient() as api:
        data = api.sanitize_for_serialization(pod)
    await spawner.api.api_client.close()
    data.setdefault("apiVersion", "v1")
    data.setdefault("kind", "Pod")
    kubernetes_validate.validate(data, K8S_VERSION, strict=True)
    return data


def make_spawner(name: str, groups, **traits) -> AfhubKubeSpawner:
    """A spawner made (and its API client closed) inside an event loop, for sync checks."""

    async def make():
        with mock.patch("kubespawner.spawner.load_config"):
            spawner = AfhubKubeSpawner(
                _mock=True, user=make_user(name, groups), **{**NO_DB, **traits}
            )
        await spawner.api.api_client.close()
        return spawner

    return asyncio.run(make())


def build(**kwargs) -> dict:
    return asyncio.run(manifest(**kwargs))


def refused(**kwargs) -> web.HTTPError:
    with pytest.raises(web.HTTPError) as info:
        build(**kwargs)
    assert info.value.status_code == 403
    return info.value


def container(pod: dict) -> dict:
    (c,) = [c for c in pod["spec"]["containers"] if c["name"] == "notebook"]
    return c


def env(pod: dict) -> dict:
    return {e["name"]: e.get("value") for e in container(pod)["env"]}


GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def test_cpu_profile_manifest():
    pod = build(
        groups=("users",), options={"profile": "cpu-standard", "cpus": "4", "memory": "8Gi"}
    )
    res = container(pod)["resources"]
    assert res["requests"] == {"cpu": 4.0, "memory": 8 * 2**30}
    assert res["limits"] == res["requests"]
    assert pod["spec"]["nodeSelector"] == {"afhub.io/pool": "cpu"}
    assert container(pod)["image"] == "ghcr.io/afhub/notebook-cpu:2026.11"
    assert env(pod)["AFHUB_RESOURCE_KIND"] == "cpu"
    assert not any("nvidia.com" in k for k in res["limits"])


@pytest.mark.parametrize("count", ["1", "2"])
def test_whole_gpu_manifest(count):
    pod = build(options={"profile": "a100-80gb", "accelerators": count, "memory": "32Gi"})
    res = container(pod)["resources"]
    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"] == count
    cores = 16.0 * int(count)
    assert float(res["requests"]["cpu"]) == float(res["limits"]["cpu"]) == cores
    assert res["requests"]["memory"] == res["limits"]["memory"] == 32 * 2**30
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert GPU_TOLERATION in pod["spec"]["tolerations"]
    assert container(pod)["image"] == "ghcr.io/afhub/notebook-gpu:2026.11"
    assert env(pod)["AFHUB_RESOURCE"] == "a100-80gb"
    assert env(pod)["AFHUB_ACCELERATOR"] == "NVIDIA A100 80GB"


def test_mig_slice_manifest():
    pod = build(groups=("users",), options={"profile": "a100-mig-1g10gb", "accelerators": "1"})
    res = container(pod)["resources"]
    assert (
        res["requests"]["nvidia.com/mig-1g.10gb"] == res["limits"]["nvidia.com/mig-1g.10gb"] == "1"
    )
    assert "nvidia.com/gpu" not in res["limits"]
    assert pod["spec"]["nodeSelector"] == {
        "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB-MIG-1g.10gb"
    }
    assert GPU_TOLERATION in pod["spec"]["tolerations"]


def test_fpga_manifest():
    pod = build(groups=("cms/fpga",), options={"profile": "alveo-u250", "accelerators": "2"})
    res = container(pod)["resources"]
    name = "xilinx.com/fpga-xilinx_u250_gen3x16_xdma_shell_4_1-0"
    assert res["requests"][name] == res["limits"][name] == "2"
    assert float(res["limits"]["cpu"]) == 16.0
    assert pod["spec"]["nodeSelector"] == {"afhub.io/accelerator": "alveo-u250"}
    assert {
        "key": "afhub.io/fpga",
        "operator": "Equal",
        "value": "true",
        "effect": "NoSchedule",
    } in pod["spec"]["tolerations"]
    assert container(pod)["image"] == "ghcr.io/afhub/notebook-fpga:2026.11"
    assert env(pod)["AFHUB_RESOURCE_KIND"] == "fpga"


def test_default_profile_and_unlisted_image():
    pod = build(options={})
    assert container(pod)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    image = "ghcr.io/afhub/notebook-ml:2026.10"
    pod = build(options={"profile": "a100-80gb", "image--unlisted-choice": image})
    assert container(pod)["image"] == image


def test_user_and_user_hyphen_get_distinct_names():
    a = build(name="user")
    b = build(name="user-hyphen")
    assert a["metadata"]["name"] != b["metadata"]["name"]
    assert (
        a["metadata"]["labels"]["hub.jupyter.org/username"]
        != b["metadata"]["labels"]["hub.jupyter.org/username"]
    )
    pvcs = {make_spawner(n, (), registry=EXAMPLE).pvc_name for n in ("user", "user-hyphen")}
    assert len(pvcs) == 2


def test_outside_group_refused_before_any_pod():
    err = refused(groups=("cms/fpga",), options={"profile": "a100-80gb", "accelerators": "1"})
    assert "not available" in err.log_message


def test_two_gpus_refused_when_quota_allows_one():
    refused(
        options={"profile": "a100-80gb", "accelerators": "2"},
        remaining_quota=lambda _spawner: {"a100-80gb": 1},
    )

    async def one_left(_spawner):
        return {"a100-80gb": 1}

    pod = build(options={"profile": "a100-80gb", "accelerators": "1"}, remaining_quota=one_left)
    assert container(pod)["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_prefix_and_junk_image_refused():
    refused(
        options={
            "profile": "a100-80gb",
            "image--unlisted-choice": "ghcr.io/afhub/notebook-ml:2026.10\nevil",
        }
    )
    refused(options={"profile": "a100-80gb", "image--unlisted-choice": "ghcr.io/afhub/x:2026.10x"})


def test_extra_user_options_refused_and_charge_to_kept():
    refused(options={"profile": "a100-80gb", "extra_resource_limits": {"nvidia.com/gpu": "8"}})
    refused(options={"profile": "a100-80gb", "privileged": True})

    async def run():
        with mock.patch("kubespawner.spawner.load_config"):
            spawner = AfhubKubeSpawner(
                _mock=True, user=make_user("bob", ["atlas"]), registry=EXAMPLE, **NO_DB
            )
        spawner.user_options = {"profile": "a100-80gb", "charge_to": "atlas", "accelerators": 2}
        await spawner.load_user_options()
        await spawner.api.api_client.close()
        return spawner

    spawner = asyncio.run(run())
    assert spawner.user_options == {
        "charge_to": "atlas",
        "profile": "a100-80gb",
        "accelerators": "2",
        "memory": "16Gi",
        "image": "ghcr.io/afhub/notebook-gpu:2026.11",
    }
    assert spawner.extra_resource_limits == {"nvidia.com/gpu": "2"}
    assert callable(spawner.profile_list)


def test_profile_form_lists_only_allowed_profiles():
    async def run(groups):
        with mock.patch("kubespawner.spawner.load_config"):
            spawner = AfhubKubeSpawner(
                _mock=True, user=make_user("eve", groups), registry=EXAMPLE, **NO_DB
            )
        await spawner.api.api_client.close()
        return await spawner._afhub_profile_list(spawner)

    assert [p["slug"] for p in asyncio.run(run(["cms/fpga"]))] == ["alveo-u250"]
    assert asyncio.run(run(["nobody"])) == []


def test_registry_as_dict_and_reloaded_file(tmp_path):
    import yaml

    data = yaml.safe_load(Path(EXAMPLE).read_text())
    pod = build(registry=data, groups=("cms/fpga",), options={"profile": "alveo-u250"})
    assert container(pod)["resources"]["limits"]["cpu"] == 8.0
    path = tmp_path / "registry.yaml"
    path.write_text(Path(EXAMPLE).read_text())
    spawner = make_spawner("x", ["atlas"], registry=str(path))
    assert "a100-80gb" in spawner.load_registry().resources
    data["resources"] = [r for r in data["resources"] if r["name"] != "a100-80gb"]
    path.write_text(yaml.safe_dump(data))
    import os

    os.utime(path, ns=(1, 10**18))
    assert "a100-80gb" not in spawner.load_registry().resources


def test_manifest_validation_catches_a_bad_pod():
    pod = build()
    pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] = {"n": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)


def test_user_without_any_resource_refused():
    err = refused(groups=("nobody",), options={})
    assert "available to your groups" in err.log_message
    pod = build(groups=("nobody",), options={}, refuse_without_profile=False)
    assert "nvidia.com/gpu" not in container(pod)["resources"].get("limits", {})


def test_spawn_form_lists_only_allowed_profiles():
    async def form(groups):
        with mock.patch("kubespawner.spawner.load_config"):
            spawner = AfhubKubeSpawner(
                _mock=True, user=make_user("eve", groups), registry=EXAMPLE, **NO_DB
            )
        await spawner.api.api_client.close()
        return await spawner.options_form(spawner)

    html = asyncio.run(form(["cms/fpga"]))
    assert 'value="alveo-u250"' in html
    assert "a100-80gb" not in html
    assert "cpu-standard" not in html
    html = asyncio.run(form(["atlas/higgs"]))
    assert 'value="a100-80gb"' in html
    assert "alveo-u250" not in html


def test_spawns_leave_the_shared_profiles_unchanged():
    from afhub.profiles.build import build_profile_list

    registry = make_spawner("z", ["atlas"], registry=EXAMPLE).load_registry()
    before = copy.deepcopy(build_profile_list(registry, {"atlas"}))
    image = "ghcr.io/afhub/notebook-ml:2026.10"
    build(options={"profile": "a100-80gb", "image--unlisted-choice": image})
    build(options={"profile": "a100-80gb", "accelerators": "3", "memory": "64Gi"})
    after = build_profile_list(registry, {"atlas"})
    assert after == before
    unlisted = after[0]["profile_options"]["image"]["unlisted_choice"]
    assert unlisted["kubespawner_override"] == {"image": "{value}"}
