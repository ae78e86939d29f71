"""afhub.fitting.jsonpatch: RFC 6902 semantics, copy-on-write, and bounded cost."""

from __future__ import annotations

import copy
import json
import time
import tracemalloc

import jsonpatch as reference
import pytest

from afhub.fitting.jsonpatch import (
    UNBOUNDED,
    PatchError,
    PatchLimits,
    PatchTooLarge,
    apply_patch,
    apply_patch_sized,
    measure,
)

DOC = {"foo": ["bar", "baz"], "a/b": 1, "m~n": 2, "obj": {"x": {"y": [1, 2]}}}


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "add", "path": "/baz", "value": "qux"}],
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        [{"op": "add", "path": "/foo/-", "value": {"k": [1]}}],
        [{"op": "add", "path": "/foo/2", "value": "end"}],
        [{"op": "add", "path": "/obj/x", "value": 3}],  # add replaces an existing member
        [{"op": "add", "path": "", "value": [1, 2]}],
        [{"op": "remove", "path": "/foo/0"}],
        [{"op": "remove", "path": "/obj/x/y"}],
        [{"op": "replace", "path": "/foo/1", "value": None}],
        [{"op": "replace", "path": "", "value": {"new": True}}],
        [{"op": "move", "from": "/foo/0", "path": "/moved"}],
        [{"op": "move", "from": "/obj/x", "path": "/obj/z"}],
        [{"op": "move", "from": "/foo/0", "path": "/foo/1"}],
        [{"op": "move", "from": "/foo", "path": "/foo"}],
        [{"op": "copy", "from": "/obj", "path": "/obj2"}],
        [{"op": "copy", "from": "/foo", "path": "/foo/-"}],
        [{"op": "test", "path": "/foo", "value": ["bar", "baz"]}],
        [{"op": "test", "path": "/a~1b", "value": 1.0}],
        # RFC 6901 escapes: ~1 is '/', ~0 is '~'
        [{"op": "replace", "path": "/a~1b", "value": 10}, {"op": "remove", "path": "/m~0n"}],
        [{"op": "add", "path": "/~01", "value": "tilde-one"}],
        [
            {"op": "copy", "from": "/obj/x/y/1", "path": "/obj/x/y/0"},
            {"op": "remove", "path": "/foo"},
        ],
    ],
)
def test_rfc6902_operations_match_the_reference_library_and_leave_the_input_alone(ops):
    before = copy.deepcopy(DOC)
    ours = apply_patch(DOC, ops)
    assert before == DOC
    assert json.dumps(ours, sort_keys=True) == json.dumps(
        reference.apply_patch(before, ops), sort_keys=True
    )


@pytest.mark.parametrize(
    ("ops", "words"),
    [
        ([{"op": "remove", "path": "/nope"}], ("operation 0", "remove /nope", "does not exist")),
        ([{"op": "replace", "path": "/nope", "value": 1}], ("'nope'", "does not exist")),
        ([{"op": "add", "path": "/foo/3", "value": 1}], ("index 3", "out of range")),
        ([{"op": "add", "path": "/foo/01", "value": 1}], ("'01'", "not an array index")),
        ([{"op": "add", "path": "/foo/-1", "value": 1}], ("not an array index",)),
        ([{"op": "remove", "path": "/foo/-"}], ("'-'", "not an array index")),
        ([{"op": "add", "path": "/a~1b/x", "value": 1}], ("cannot descend", "number")),
        ([{"op": "add", "path": "nope", "value": 1}], ("not a JSON pointer",)),
        ([{"op": "add", "path": "/x"}], ("needs a value",)),
        ([{"op": "copy", "path": "/x"}], ("needs from",)),
        ([{"op": "move", "from": "/obj", "path": "/obj/x/inside"}], ("own children",)),
        ([{"op": "test", "path": "/foo/0", "value": "baz"}], ("test failed", "/foo/0")),
        ([{"op": "test", "path": "/a~1b", "value": True}], ("test failed",)),
        ([{"op": "remove", "path": ""}], ("whole document",)),
        ([{"op": "frobnicate", "path": "/x"}], ("unknown operation", "frobnicate")),
        (["add"], ("must be a JSON object",)),
        ({"op": "add"}, ("must be a list",)),
        (
            [
                {"op": "test", "path": "/foo", "value": ["bar", "baz"]},
                {"op": "remove", "path": "/q"},
            ],
            ("operation 1",),
        ),
    ],
)
def test_errors_name_the_operation_and_the_problem(ops, words):
    with pytest.raises(PatchError) as info:
        apply_patch(DOC, ops)
    for word in words:
        assert word in str(info.value)


def test_copy_on_write_shares_untouched_parts():
    ops = [{"op": "replace", "path": "/obj/x/y/0", "value": 5}]
    out = apply_patch(DOC, ops)
    assert out["foo"] is DOC["foo"]
    assert out["obj"] is not DOC["obj"]
    assert DOC["obj"]["x"]["y"][0] == 1


def doubling(n: int, path: str = "/channels") -> list[dict]:
    """The issue's amplification: each copy doubles the document."""
    return [{"op": "copy", "from": path, "path": f"{path}/-"} for _ in range(n)]


def test_a_doubling_chain_is_refused_at_the_operation_that_crosses_the_cap_in_bounded_time():
    doc = {"channels": [{"name": "c", "samples": [{"data": [1.0] * 10}]}]}
    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(PatchTooLarge) as info:
            apply_patch(doc, doubling(60), PatchLimits(max_copied_nodes=None, max_nodes=10**6))
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # /channels holds 16 values, the document 17: after k copies 16 * 2**k + 1, over 10**6
    # at the 16th copy (operations count from 0)
    assert "operation 15 " in str(info.value)
    assert "1000000 JSON values" in str(info.value)
    assert elapsed < 0.5, elapsed
    assert peak < 2 * 1024 * 1024, peak  # the refusal built nothing of that size


def test_copied_values_are_capped_per_patch():
    doc = {"channels": [{"name": "c", "data": list(range(100))}]}
    with pytest.raises(PatchTooLarge) as info:
        apply_patch(doc, doubling(10), PatchLimits(max_copied_nodes=1000))
    assert "copy operations" in str(info.value)
    assert "1000" in str(info.value)
    # under the cap: applied
    assert len(apply_patch(doc, doubling(3), PatchLimits(max_copied_nodes=1000))["channels"]) == 4


def test_operation_count_and_depth_are_capped():
    ops = [{"op": "add", "path": f"/k{i}", "value": i} for i in range(11)]
    with pytest.raises(PatchTooLarge, match="11 operations, over the limit of 10"):
        apply_patch({}, ops, PatchLimits(max_operations=10))
    # copying a value into itself nests it one level deeper each time
    nest = [{"op": "copy", "from": "/a", "path": "/a/a"} for _ in range(20)]
    with pytest.raises(PatchTooLarge, match="nested 9 levels deep, over the limit of 8"):
        apply_patch({"a": {}}, nest, PatchLimits(max_depth=8))
    assert apply_patch({"a": {}}, nest[:5], UNBOUNDED)["a"]["a"]["a"]["a"]["a"]["a"] == {}


def test_sizes_count_shared_values_where_they_appear():
    shared = [1, 2, 3]
    assert measure({"a": shared, "b": shared}) == (9, 2)
    doc, nodes = apply_patch_sized({"a": shared}, [{"op": "copy", "from": "/a", "path": "/b"}])
    assert doc["b"] is shared
    assert nodes == measure(doc)[0] == 9
