"""Registry parsing: valid entries load, bad ones are refused naming the entry and field."""

from __future__ import annotations

import contextlib
import copy
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from afhub.registry.model import (
    EXTENDED_RESOURCE_RE,
    RegistryError,
    load_registry,
    parse_quantity,
    parse_registry,
)

HERE = Path(__file__).parent
EXAMPLE = HERE / "example.yaml"
DOCS = HERE.parents[1] / "docs" / "resources.md"


@pytest.fixture
def data() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def gpu(data: dict) -> dict:
    return next(r for r in data["resources"] if r["name"] == "a100-80gb")


def refused(data: dict, *fragments: str) -> str:
    with pytest.raises(RegistryError) as info:
        parse_registry(data)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_example_loads_with_every_field():
    registry = load_registry(str(EXAMPLE))
    assert list(registry.providers) == ["uchicago", "fnal"]
    assert registry.providers["fnal"].contacts == ("eaf-admins@fnal.example", "Jane Doe")
    assert list(registry.resources) == [
        "cpu-standard",
        "a100-80gb",
        "a100-mig-1g10gb",
        "alveo-u250",
    ]
    a100 = registry.resources["a100-80gb"]
    assert (a100.kind, a100.count_per_node, a100.node_count) == ("gpu", 4, 2)
    assert a100.extended_resource == "nvidia.com/gpu"
    assert a100.memory_bytes == 512 * 2**30
    assert a100.node_selector == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert a100.tolerations[0]["effect"] == "NoSchedule"
    assert a100.allowed_groups == ("atlas", "cms/gpu-users")
    mig = registry.resources["a100-mig-1g10gb"]
    assert mig.extended_resource == "nvidia.com/mig-1g.10gb"
    fpga = registry.resources["alveo-u250"]
    assert fpga.kind == "fpga"
    assert fpga.extended_resource.startswith("xilinx.com/fpga-")
    cpu = registry.resources["cpu-standard"]
    assert cpu.extended_resource is None
    assert cpu.count_per_node == 0


def test_yaml_text_and_dict_give_the_same_registry(data):
    assert parse_registry(EXAMPLE.read_text()) == parse_registry(data)


def test_docs_example_parses():
    text = DOCS.read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert blocks, "docs/resources.md has no yaml example"
    registry = parse_registry(blocks[0])
    kinds = {r.kind for r in registry.resources.values()}
    assert kinds == {"cpu", "gpu", "fpga"}
    assert any("mig-" in (r.extended_resource or "") for r in registry.resources.values())


def test_negative_count_refused(data):
    gpu(data)["count_per_node"] = -1
    refused(data, "'a100-80gb'", "count_per_node", "negative")


def test_negative_node_count_refused(data):
    gpu(data)["node_count"] = -3
    refused(data, "'a100-80gb'", "node_count", "negative")


@pytest.mark.parametrize("value", [1.5, "2", True, None])
def test_non_integer_count_refused(data, value):
    gpu(data)["count_per_node"] = value
    refused(data, "count_per_node")


@pytest.mark.parametrize("kind", ["tpu", "GPU", "", None, "gpu "])
def test_unknown_kind_refused(data, kind):
    gpu(data)["kind"] = kind
    refused(data, "'a100-80gb'", "kind")


@pytest.mark.parametrize(
    "name",
    [
        "nvidia.com/gpu-junk",
        "nvidia.com/gpu\n",
        "nvidia.com/gpux",
        "xnvidia.com/gpu",
        "nvidia.com/mig-1g.10gb; rm -rf /",
        "nvidia.com/mig-1g10gb",
        "example.com/gpu",
        None,
    ],
)
def test_bad_extended_resource_refused(data, name):
    gpu(data)["extended_resource"] = name
    refused(data, "'a100-80gb'", "extended_resource")


def test_fpga_needs_an_fpga_resource_name(data):
    entry = next(r for r in data["resources"] if r["kind"] == "fpga")
    entry["extended_resource"] = "nvidia.com/gpu"
    refused(data, "'alveo-u250'", "extended_resource")


def test_cpu_with_extended_resource_refused(data):
    data["resources"][0]["extended_resource"] = "nvidia.com/gpu"
    refused(data, "'cpu-standard'", "extended_resource")


def test_gpu_with_zero_accelerators_refused(data):
    gpu(data)["count_per_node"] = 0
    refused(data, "count_per_node", "at least 1")


def test_duplicate_names_refused(data):
    data["resources"].append(copy.deepcopy(gpu(data)))
    refused(data, "'a100-80gb'", "duplicate")
    data["resources"].pop()
    data["providers"].append(copy.deepcopy(data["providers"][0]))
    refused(data, "'uchicago'", "duplicate")


def test_unknown_field_and_provider_refused(data):
    gpu(data)["gpus"] = 4
    refused(data, "'a100-80gb'", "unknown fields", "gpus")
    del gpu(data)["gpus"]
    gpu(data)["provider"] = "nowhere"
    refused(data, "'a100-80gb'", "provider")


@pytest.mark.parametrize("group", ["Atlas", "/atlas", "atlas//higgs", "a b", "<script>", ""])
def test_bad_group_path_refused(data, group):
    gpu(data)["allowed_groups"] = ["atlas", group]
    refused(data, "'a100-80gb'", "allowed_groups")


@pytest.mark.parametrize("memory", ["16GB", "16 Gi", "-1Gi", "lots", 16, "0", "1e3"])
def test_bad_memory_refused(data, memory):
    gpu(data)["memory_per_node"] = memory
    refused(data, "memory_per_node")


def test_memory_choice_above_node_refused(data):
    gpu(data)["memory_choices"] = ["1Ti"]
    refused(data, "memory_choices")


@pytest.mark.parametrize(
    "toleration",
    [
        {"key": "nvidia.com/gpu", "operator": "Maybe"},
        {"key": "nvidia.com/gpu", "operator": "Exists", "value": "x"},
        {"key": "nvidia.com/gpu", "effect": "Sometimes"},
        {"key": "bad key!", "operator": "Exists"},
        {"operator": "Equal", "value": "x"},
        {"key": "a", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5},
        {"key": "a", "operator": "Exists", "extra": 1},
        "nvidia.com/gpu",
    ],
)
def test_bad_toleration_refused(data, toleration):
    gpu(data)["tolerations"] = [toleration]
    refused(data, "'a100-80gb'", "tolerations")


@pytest.mark.parametrize(
    "selector", [{"bad key!": "x"}, {"nvidia.com/gpu.product": "has space"}, ["a"]]
)
def test_bad_node_selector_refused(data, selector):
    gpu(data)["node_selector"] = selector
    refused(data, "node_selector")


@pytest.mark.parametrize(
    "pattern",
    ["ghcr\\.io/afhub/.*", "^ghcr\\.io/afhub/.*", "^ghcr\\.io/afhub/.*\\$", "^(unclosed$"],
)
def test_unanchored_or_broken_image_pattern_refused(data, pattern):
    gpu(data)["image_pattern"] = pattern
    refused(data, "image_pattern")


@pytest.mark.parametrize("image", ["ghcr.io/afhub/x:1; rm -rf /", "UPPER/case", "", "a b"])
def test_bad_image_refused(data, image):
    gpu(data)["image"] = image
    refused(data, "image")


def test_not_a_mapping_and_bad_yaml_refused():
    for source in ["- a\n- b\n", "providers: [", "other: 1\n"]:
        with pytest.raises(RegistryError):
            parse_registry(source)
    assert parse_registry("").resources == {}


def test_quantities():
    assert parse_quantity("512Mi") == 512 * 2**20
    assert parse_quantity("1.5Gi") == int(1.5 * 2**30)
    assert parse_quantity("2G") == 2 * 10**9
    assert parse_quantity("1024") == 1024


@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_counts_accepted_exactly_when_not_negative(n):
    entry = yaml.safe_load(EXAMPLE.read_text())
    gpu(entry)["node_count"] = n
    if n < 0:
        with pytest.raises(RegistryError, match="node_count"):
            parse_registry(entry)
    else:
        assert parse_registry(entry).resources["a100-80gb"].node_count == n


@given(st.text(max_size=40))
def test_extended_resource_accepted_only_on_full_match(name):
    entry = yaml.safe_load(EXAMPLE.read_text())
    gpu(entry)["extended_resource"] = name
    ok = EXTENDED_RESOURCE_RE.fullmatch(name) is not None and not name.startswith("xilinx")
    if ok:
        assert parse_registry(entry).resources["a100-80gb"].extended_resource == name
    else:
        with pytest.raises(RegistryError, match="extended_resource"):
            parse_registry(entry)


@given(
    st.sampled_from(["nvidia.com/gpu", "nvidia.com/mig-2g.20gb", "amd.com/gpu"]),
    st.text(min_size=1, max_size=10),
)
def test_valid_prefix_with_junk_suffix_refused(prefix, junk):
    entry = yaml.safe_load(EXAMPLE.read_text())
    gpu(entry)["extended_resource"] = prefix + junk
    assume(EXTENDED_RESOURCE_RE.fullmatch(prefix + junk) is None)  # "mig-2g.20gb" + "0" is valid
    with pytest.raises(RegistryError, match="extended_resource"):
        parse_registry(entry)


def test_expand_groups_adds_every_ancestor():
    from afhub.registry.model import expand_groups

    assert expand_groups({"a/b/c", "a/b", "x", 3}) == {"a", "a/b", "a/b/c", "x"}
    assert expand_groups({"a/b", "a/b/c/d"}) == {"a", "a/b", "a/b/c", "a/b/c/d"}
    assert expand_groups(set()) == frozenset()


@given(st.lists(st.lists(st.sampled_from("abc"), min_size=1, max_size=4), max_size=6))
def test_expand_groups_matches_prefixes(paths):
    from afhub.registry.model import expand_groups

    groups = ["/".join(p) for p in paths]
    expected = {"/".join(p[:i]) for p in paths for i in range(1, len(p) + 1)}
    assert expand_groups(groups) == expected


def test_removing_a_resource_in_use_refused(data):
    from afhub.registry.model import check_update

    old = parse_registry(data)
    smaller = copy.deepcopy(data)
    smaller["resources"] = [r for r in smaller["resources"] if r["name"] != "a100-80gb"]
    new = parse_registry(smaller)
    with pytest.raises(RegistryError, match=r"'a100-80gb'.*2 server"):
        check_update(old, new, {"a100-80gb": 2})
    check_update(old, new, {"a100-80gb": 0, "cpu-standard": 3})  # drained: allowed
    changed = copy.deepcopy(data)
    gpu(changed)["extended_resource"] = "nvidia.com/mig-1g.10gb"
    with pytest.raises(RegistryError, match="extended_resource"):
        check_update(old, parse_registry(changed), {"a100-80gb": 1})
    more = copy.deepcopy(data)
    gpu(more)["node_count"] = 5
    check_update(old, parse_registry(more), {"a100-80gb": 1})  # growing a pool is fine


JUNK_VALUES = [[], {}, {"a": 1}, None, 1.5, -1, True, "", [1], ["x", {}], "\x00", 10**30]


@pytest.mark.parametrize("junk", JUNK_VALUES, ids=repr)
def test_any_junk_in_any_field_is_a_registry_error(data, junk):
    """Whatever type a field holds, the answer is a RegistryError (a 400), never a crash."""
    fields = {f for entry in data["resources"] for f in entry} | {"provider", "node_count"}
    for fieldname in sorted(fields):
        for i in range(len(data["resources"])):
            broken = copy.deepcopy(data)
            broken["resources"][i][fieldname] = junk
            with contextlib.suppress(RegistryError):
                parse_registry(broken)
    for fieldname in ("name", "institution", "contacts"):
        broken = copy.deepcopy(data)
        broken["providers"][0][fieldname] = junk
        with contextlib.suppress(RegistryError):
            parse_registry(broken)
