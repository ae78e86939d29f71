"""The local spawn form: kubespawner's profile form rendered with escaping, and its
fields turned into user_options (other profiles' fields dropped)."""

from __future__ import annotations

from afhub.profiles.build import build_profile_list, resolve_user_options
from afhub.registry.model import parse_registry
from afhub.spawners.profiles import form_options, render_profile_form

REGISTRY = parse_registry(
    {
        "providers": [{"name": "lab", "institution": "A Lab"}],
        "resources": [
            {
                "name": "gpu",
                "provider": "lab",
                "site": "here",
                "kind": "gpu",
                "accelerator": "NVIDIA A100 80GB",
                "count_per_node": 2,
                "cpu_per_node": 8,
                "memory_per_node": "8Gi",
                "extended_resource": "nvidia.com/gpu",
                "image": "ghcr.io/afhub/notebook-gpu:1",
                "image_pattern": "^ghcr\\.io/afhub/[a-z-]+:[0-9]+$",
                "allowed_groups": ["atlas"],
                "description": "<script>alert(1)</script> {{ 7*7 }}",
            },
            {
                "name": "cpu",
                "provider": "lab",
                "site": "here",
                "kind": "cpu",
                "cpu_per_node": 4,
                "memory_per_node": "8Gi",
                "image": "ghcr.io/afhub/notebook-cpu:1",
                "allowed_groups": ["atlas"],
            },
        ],
    }
)


def test_form_is_kubespawners_and_escaped():
    profiles = build_profile_list(REGISTRY, {"atlas"})
    html = render_profile_form(profiles, {})
    assert 'name="profile"' in html
    assert 'value="gpu"' in html
    assert 'value="cpu"' in html
    assert 'name="profile-option-gpu--accelerators"' in html
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;" in html
    assert "{{ 7*7 }}" in html
    assert "49" not in html
    # rendering works on a copy: the shared profile bodies keep no unlisted_choice default
    assert "unlisted_choice" not in profiles[1]["profile_options"]["memory"]


def test_form_fields_become_user_options_that_resolve():
    formdata = {
        "profile": ["gpu"],
        "profile-option-gpu--accelerators": ["2"],
        "profile-option-gpu--image": ["unlisted-choice"],
        "profile-option-gpu--image--unlisted-choice": ["ghcr.io/afhub/ml:2026"],
        "profile-option-cpu--cpus": ["4"],
        "charge_to": ["atlas"],
        "_xsrf": ["x"],
    }
    options = form_options(formdata)
    assert options == {
        "profile": "gpu",
        "accelerators": "2",
        "image--unlisted-choice": "ghcr.io/afhub/ml:2026",
    }
    resolved = resolve_user_options(build_profile_list(REGISTRY, {"atlas"}), options)
    assert resolved.kubespawner_override["image"] == "ghcr.io/afhub/ml:2026"
    assert resolved.kubespawner_override["extra_resource_limits"] == {"nvidia.com/gpu": "2"}
    assert form_options({}) == {}
