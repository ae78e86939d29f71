"""The local spawn form: kubespawner's profile form rendered with escaping, and its
fields turned into user_options (other profiles' fields dropped); the "Charge to group"
select, the select look and how a refusal reads (issue 13)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from afhub.profiles.build import build_profile_list, resolve_user_options
from afhub.quotas.decisions import NodeState
from afhub.quotas.limits import Holdings, Limits, Usage
from afhub.quotas.refusals import Advice
from afhub.quotas.remaining import remaining
from afhub.registry.model import parse_registry
from afhub.spawners.form import GroupChoice, charge_select, refusal_error, refusal_html
from afhub.spawners.profiles import form_options, render_profile_form


def node(path: str, limits: Limits, servers: int = 0) -> NodeState:
    return NodeState(path, limits, Usage(holdings=Holdings(servers=servers)))


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


def test_selects_have_the_hubs_select_look():
    html = render_profile_form(build_profile_list(REGISTRY, {"atlas"}), {})
    assert 'class="form-select js-profile-option-select"' in html
    assert "form-control js-profile-option-select" not in html
    select = charge_select([GroupChoice("users"), GroupChoice("atlas")], None)
    assert '<select class="form-select" id="afhub-charge-to" name="charge_to">' in select


def test_charge_select_keeps_the_choice_carries_each_quota_and_marks_full_groups():
    choices = [
        GroupChoice("users", remaining([node("users", Limits(max_servers=2), servers=2)])),
        GroupChoice("roomy", remaining([node("roomy", Limits(max_servers=3), servers=1)])),
        GroupChoice("tight", remaining([node("tight", Limits(max_servers=1), servers=1)])),
    ]
    html = charge_select(choices, "tight", {"roomy": ["gpu"]})
    options = dict(re.findall(r'<option value="([^"]+)"([^>]*>[^<]*)</option>', html))
    # the previous choice is kept, full or not; another full group is offered but disabled
    assert options["tight"].endswith(" selected>tight (full: 1 of 1 servers)")
    assert options["users"].endswith(" disabled>users (full: 2 of 2 servers)")
    assert options["roomy"].endswith('">roomy (cannot pay for gpu)')
    assert 'data-quota="Quota of roomy leaves 2 more servers (of 3)."' in options["roomy"]
    # without a (known) previous choice: the first group with room, not the full default
    for kept in ("gone", None):
        flags = dict(re.findall(r'<option value="([^"]+)"([^>]*)>', charge_select(choices, kept)))
        assert [path for path, f in flags.items() if "selected" in f] == ["roomy"]
        assert "disabled" in flags["users"]


def test_refusal_reads_as_its_words_with_the_reset_time_marked():
    advice = Advice(
        text="You cannot start this server. It resets at 2026-12-01 00:00 UTC <now>.",
        resets_at=datetime(2026, 12, 1, tzinfo=UTC),
        reset_text="2026-12-01 00:00 UTC",
    )
    error = refusal_error(advice)
    assert error.status_code == 403
    assert error.log_message == advice.text
    assert error.jupyterhub_message == advice.text
    assert error.jupyterhub_html_message == (
        "You cannot start this server. It resets at "
        '<time class="afhub-reset" datetime="2026-12-01T00:00:00+00:00">'
        "2026-12-01 00:00 UTC</time> &lt;now&gt;."
    )
    assert "HTTP" not in refusal_html(advice)
