"""Profiles from the registry: who sees what, quota-limited choices, server-side refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from afhub.profiles.build import ProfileError, build_profile_list, resolve_user_options
from afhub.registry.model import load_registry

EXAMPLE = Path(__file__).parents[1] / "registry" / "example.yaml"
REGISTRY = load_registry(str(EXAMPLE))
GOOD_IMAGE = "ghcr.io/afhub/notebook-ml:2026.10"


def slugs(groups, remaining=None) -> list[str]:
    return [p["slug"] for p in build_profile_list(REGISTRY, set(groups), remaining)]


def gpu_profiles(groups=("atlas",), remaining=None):
    return build_profile_list(REGISTRY, set(groups), remaining)


def test_profiles_follow_groups_and_inherit_down_the_tree():
    assert slugs({"users"}) == ["cpu-standard", "a100-mig-1g10gb"]
    assert slugs({"atlas"}) == ["a100-80gb"]
    assert slugs({"atlas/higgs/students"}) == ["a100-80gb"]
    assert slugs({"cms"}) == []  # only cms/gpu-users and cms/fpga are allowed
    assert slugs({"cms/gpu-users/x"}) == ["a100-80gb"]
    assert slugs({"cms/fpga", "users"}) == ["cpu-standard", "a100-mig-1g10gb", "alveo-u250"]
    assert slugs({"atlasx", "atla", "users-extra"}) == []
    assert slugs(set()) == []


def test_first_profile_is_default_only():
    profiles = build_profile_list(REGISTRY, {"users", "atlas"})
    assert [bool(p.get("default")) for p in profiles] == [True, False, False]


def test_gpu_profile_sets_requests_and_limits_together():
    (profile,) = gpu_profiles()
    over = profile["kubespawner_override"]
    assert (
        over["extra_resource_guarantees"]
        == over["extra_resource_limits"]
        == {"nvidia.com/gpu": "1"}
    )
    assert over["cpu_guarantee"] == over["cpu_limit"] == 16.0
    assert over["mem_guarantee"] == over["mem_limit"] == 16 * 2**30
    assert over["node_selector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert over["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert over["environment"]["AFHUB_RESOURCE_KIND"] == "gpu"
    choices = profile["profile_options"]["accelerators"]["choices"]
    assert list(choices) == ["1", "2", "3", "4"]
    for n, choice in choices.items():
        ko = choice["kubespawner_override"]
        assert (
            ko["extra_resource_guarantees"] == ko["extra_resource_limits"] == {"nvidia.com/gpu": n}
        )
        assert ko["cpu_guarantee"] == ko["cpu_limit"] == 16.0 * int(n)


def test_cpu_profile_has_core_choices_and_no_extended_resources():
    profile = build_profile_list(REGISTRY, {"users"})[0]
    assert list(profile["profile_options"]["cpus"]["choices"]) == [
        "1",
        "2",
        "4",
        "8",
        "16",
        "32",
        "64",
    ]
    assert "extra_resource_limits" not in profile["kubespawner_override"]
    assert list(profile["profile_options"]["image"]["choices"]) == [
        "ghcr.io/afhub/notebook-cpu:2026.11",
        "ghcr.io/afhub/notebook-root:2026.11",
    ]
    assert "unlisted_choice" not in profile["profile_options"]["image"]
    assert list(profile["profile_options"]["memory"]["choices"]) == [
        "2Gi",
        "4Gi",
        "8Gi",
        "16Gi",
        "32Gi",
    ]


def test_remaining_quota_limits_choices_and_is_shown():
    (profile,) = gpu_profiles(remaining={"a100-80gb": 1})
    assert list(profile["profile_options"]["accelerators"]["choices"]) == ["1"]
    assert "Your quota leaves 1 GPU." in profile["description"]
    (profile,) = gpu_profiles(remaining={"a100-80gb": 2.5})
    assert list(profile["profile_options"]["accelerators"]["choices"]) == ["1", "2"]
    assert "2.5 GPUs" in profile["description"]
    assert gpu_profiles(remaining={"a100-80gb": 0}) == []
    (profile,) = gpu_profiles(remaining={"other": 0})
    assert "quota" not in profile["description"]


def test_two_gpus_refused_when_quota_allows_one():
    profiles = gpu_profiles(remaining={"a100-80gb": 1})
    with pytest.raises(ProfileError, match="accelerators"):
        resolve_user_options(profiles, {"profile": "a100-80gb", "accelerators": "2"})
    with pytest.raises(ProfileError, match="accelerators"):
        resolve_user_options(profiles, {"profile": "a100-80gb", "accelerators": 2})
    ok = resolve_user_options(profiles, {"profile": "a100-80gb", "accelerators": 1})
    assert ok.choices["accelerators"] == "1"


def test_resolve_defaults_and_overrides():
    resolved = resolve_user_options(gpu_profiles(), {})
    assert resolved.profile == "a100-80gb"
    assert resolved.choices == {
        "accelerators": "1",
        "memory": "16Gi",
        "image": "ghcr.io/afhub/notebook-gpu:2026.11",
    }
    resolved = resolve_user_options(
        gpu_profiles(), {"profile": "a100-80gb", "accelerators": "2", "memory": "64Gi"}
    )
    over = resolved.kubespawner_override
    assert (
        over["extra_resource_guarantees"]
        == over["extra_resource_limits"]
        == {"nvidia.com/gpu": "2"}
    )
    assert over["mem_limit"] == 64 * 2**30
    assert over["cpu_limit"] == 32.0
    assert resolved.user_options({"charge_to": "atlas"}) == {
        "charge_to": "atlas",
        "profile": "a100-80gb",
        "accelerators": "2",
        "memory": "64Gi",
        "image": "ghcr.io/afhub/notebook-gpu:2026.11",
    }


def test_outside_groups_profile_refused():
    cms = build_profile_list(REGISTRY, {"cms/fpga"})
    with pytest.raises(ProfileError, match="not available"):
        resolve_user_options(cms, {"profile": "a100-80gb", "accelerators": "1"})
    with pytest.raises(ProfileError, match="no profiles"):
        resolve_user_options([], {"profile": "a100-80gb"})
    assert resolve_user_options([], {"charge_to": "cms"}).profile is None


@pytest.mark.parametrize(
    "options",
    [
        {"profile": "a100-80gb", "privileged": True},
        {"profile": "a100-80gb", "extra_resource_limits": {"nvidia.com/gpu": "8"}},
        {"profile": "a100-80gb", "memory--unlisted-choice": "1Ti"},
        {"profile": "a100-80gb", "node_selector": {}},
        {"cpus": "4"},
    ],
)
def test_extra_keys_refused(options):
    with pytest.raises(ProfileError, match="unknown options"):
        resolve_user_options(gpu_profiles(), options)


@pytest.mark.parametrize(
    "image",
    [
        GOOD_IMAGE + "junk",
        GOOD_IMAGE + "\n",
        GOOD_IMAGE + "\nevil/image:1",
        GOOD_IMAGE + " ; rm -rf /",
        "docker.io/evil/" + GOOD_IMAGE,
        "ghcr.io/afhub/{value}:2026.10",
        "x" * 300,
    ],
)
def test_unlisted_image_with_valid_prefix_and_junk_refused(image):
    with pytest.raises(ProfileError, match="image"):
        resolve_user_options(
            gpu_profiles(), {"profile": "a100-80gb", "image--unlisted-choice": image}
        )


def test_unlisted_image_that_fully_matches_is_used():
    resolved = resolve_user_options(
        gpu_profiles(), {"profile": "a100-80gb", "image--unlisted-choice": GOOD_IMAGE}
    )
    assert resolved.unlisted == {"image": GOOD_IMAGE}
    assert resolved.kubespawner_override["image"] == GOOD_IMAGE


def test_unlisted_on_a_profile_without_pattern_refused():
    cpu = build_profile_list(REGISTRY, {"users"})
    with pytest.raises(ProfileError, match="unknown options"):
        resolve_user_options(cpu, {"profile": "cpu-standard", "image--unlisted-choice": GOOD_IMAGE})


@pytest.mark.parametrize(
    "options",
    [
        {"profile": "a100-80gb", "accelerators": "5"},
        {"profile": "a100-80gb", "accelerators": "1 "},
        {"profile": "a100-80gb", "memory": "512Gi"},
        {"profile": "a100-80gb", "image": "ghcr.io/afhub/notebook-cpu:2026.11"},
        {"profile": "a100-80gb", "accelerators": ["1"]},
        {"profile": "a100-80gb", "accelerators": True},
        {"profile": "a100-80gb", "image": GOOD_IMAGE, "image--unlisted-choice": GOOD_IMAGE},
        {"profile": ["a100-80gb"]},
    ],
)
def test_unlisted_values_refused(options):
    with pytest.raises(ProfileError):
        resolve_user_options(gpu_profiles(), options)


def test_user_options_must_be_a_mapping():
    with pytest.raises(ProfileError):
        resolve_user_options(gpu_profiles(), ["profile"])


@given(
    st.dictionaries(
        st.sampled_from(
            ["profile", "accelerators", "memory", "image", "image--unlisted-choice", "x"]
        ),
        st.one_of(st.text(max_size=40), st.integers(-3, 9), st.none()),
        max_size=5,
    )
)
def test_anything_resolved_is_listed(options):
    profiles = build_profile_list(REGISTRY, {"atlas", "users"}, {"a100-80gb": 2})
    try:
        resolved = resolve_user_options(profiles, options)
    except ProfileError:
        return
    profile = next(p for p in profiles if p["slug"] == resolved.profile)
    for name, value in resolved.choices.items():
        assert value in profile["profile_options"][name]["choices"]
    for name, value in resolved.unlisted.items():
        assert name == "image"
        assert value.startswith("ghcr.io/afhub/")
        assert "\n" not in value
    over = resolved.kubespawner_override
    assert over.get("extra_resource_guarantees") == over.get("extra_resource_limits")
    if resolved.profile == "a100-80gb":
        assert int(over["extra_resource_limits"]["nvidia.com/gpu"]) <= 2


def test_profile_lists_of_different_users_are_independent_at_top_level():
    a = build_profile_list(REGISTRY, {"atlas"}, {"a100-80gb": 1})
    b = build_profile_list(REGISTRY, {"atlas"})
    assert "quota" in a[0]["description"]
    assert "quota" not in b[0]["description"]
    assert list(a[0]["profile_options"]["accelerators"]["choices"]) == ["1"]
    assert list(b[0]["profile_options"]["accelerators"]["choices"]) == ["1", "2", "3", "4"]
    c = build_profile_list(REGISTRY, {"users", "atlas"})
    assert c[0]["default"]
    assert not c[2].get("default")
    assert b[0]["default"]


@given(
    st.sets(
        st.sampled_from(
            ["users", "atlas", "atlas/higgs", "cms", "cms/fpga", "cms/gpu-users/x", "other/a"]
        )
    )
)
def test_every_listed_profile_is_allowed_to_an_ancestor(groups):
    ancestors = {"/".join(g.split("/")[:i]) for g in groups for i in range(1, g.count("/") + 2)}
    listed = slugs(groups)
    for resource in REGISTRY.resources.values():
        allowed = bool(ancestors & set(resource.allowed_groups))
        assert (resource.name in listed) == allowed


def test_cpu_quota_limits_core_choices():
    (cpu, _mig) = build_profile_list(REGISTRY, {"users"}, {"cpu-standard": 6})
    assert list(cpu["profile_options"]["cpus"]["choices"]) == ["1", "2", "4"]
    assert "Your quota leaves 6 cores." in cpu["description"]
    with pytest.raises(ProfileError, match="cpus"):
        resolve_user_options([cpu], {"profile": "cpu-standard", "cpus": "8"})
    assert build_profile_list(REGISTRY, {"users"}, {"cpu-standard": 0.5})[0]["slug"] != (
        "cpu-standard"
    )
