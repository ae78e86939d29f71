"""Bad input and trust: every rejected request names its problem and leaks nothing."""

from __future__ import annotations

import contextlib
import copy
import json
import re
import time
from pathlib import Path

import jsonpatch
import pyhf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from afhub.fitting import validation
from afhub.fitting.jsonpatch import Sizer
from afhub.fitting.types import FitSettings
from afhub.fitting.validation import (
    Limits,
    ValidationError,
    apply_patch,
    canonical_sha256,
    parse_body,
    validate_payload,
    validate_request,
)

_MACHINE_PATH = re.compile(r"/(?:work|tmp|root|home|usr|opt|etc|var|proc)\b")


def small_workspace() -> dict:
    """Two channels, a normfactor POI, per-bin and scalar nuisance parameters."""
    return {
        "version": "1.0.0",
        "channels": [
            {
                "name": "SR",
                "samples": [
                    {
                        "name": "signal",
                        "data": [5.0, 3.0],
                        "modifiers": [{"name": "mu", "type": "normfactor", "data": None}],
                    },
                    {
                        "name": "bkg",
                        "data": [50.0, 52.0],
                        "modifiers": [
                            {"name": "bkg_unc", "type": "shapesys", "data": [3.0, 7.0]},
                            {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}},
                        ],
                    },
                ],
            },
            {
                "name": "CR",
                "samples": [
                    {
                        "name": "bkg",
                        "data": [100.0],
                        "modifiers": [
                            {"name": "bkg_norm", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}}
                        ],
                    }
                ],
            },
        ],
        "observations": [{"name": "SR", "data": [51.0, 48.0]}, {"name": "CR", "data": [102.0]}],
        "measurements": [{"name": "meas", "config": {"poi": "mu", "parameters": []}}],
    }


def body(**request) -> bytes:
    request.setdefault("workspace", small_workspace())
    return json.dumps(request).encode()


def rejected(raw: bytes | dict, *words: str, limits: Limits = validation.DEFAULT_LIMITS) -> str:
    """Assert the request is rejected with a safe message naming every word; return it."""
    validate = validate_payload if isinstance(raw, dict) else validate_request
    with pytest.raises(ValidationError) as info:
        validate(raw, limits)
    message = info.value.message
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    assert "Traceback" not in message
    assert "site-packages" not in message
    assert not _MACHINE_PATH.search(message), message
    assert str(Path(__file__).resolve().parents[2]) not in message
    assert info.value.to_dict()["message"] == message
    return message


# ----------------------------------------------------------------------------- raw body


def test_valid_request_gives_a_task():
    task = validate_request(body(operation="hypotest", settings={"poi_values": [0.5, 1]}))
    assert task.operation == "hypotest"
    assert task.settings.poi_values == (0.5, 1.0)
    assert task.patches == ()
    assert task.workspace_sha256 == canonical_sha256(small_workspace())


def test_body_over_size_limit():
    msg = rejected(body(), "bytes", "limit", limits=Limits(max_body_bytes=200))
    assert "200" in msg


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_literals(literal):
    raw = body().replace(b'"data": [51.0', b'"data": [' + literal.encode())
    rejected(raw, literal, "finite")


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1" * 400])
def test_numbers_that_overflow(number):
    raw = body().replace(b'"data": [51.0', b'"data": [' + number.encode())
    rejected(raw, "number" if "e" in number else "integer")


def test_nesting_100000_deep_is_rejected_quickly():
    start = time.perf_counter()
    rejected(b"[" * 100_000 + b"]" * 100_000, "nested", "64")
    rejected(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "nested")
    assert time.perf_counter() - start < 2


def test_brackets_inside_strings_do_not_count_as_nesting():
    deep_name = "[{" * 500 + '\\"' + "]}" * 500
    raw = body().replace(b'"name": "meas"', f'"name": "{deep_name}"'.encode())
    task = validate_request(raw)
    assert task.workspace["measurements"][0]["name"].startswith("[{[{")


def test_invalid_utf8():
    raw = body().replace(b'"SR"', b'"S\xff\xfeR"', 1)
    rejected(raw, "UTF-8")


def test_unpaired_surrogate():
    rejected(b'{"workspace": {"version": "\\ud800"}}', "surrogate")


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b'{"workspace": ', ("not valid JSON", "line 1")),
        (b"[1, 2]", ("JSON object",)),
        (b'{"workspace": {}, "workspace": {}}', ("twice", "workspace")),
        (b"{}", ("no workspace",)),
    ],
)
def test_malformed_json(raw, words):
    rejected(raw, *words)


def test_unknown_request_field():
    rejected(body(worksapce={}), "unknown", "worksapce")


# ----------------------------------------------------------------------------- workspace


def test_workspace_failing_schema():
    ws = small_workspace()
    del ws["observations"]
    rejected(body(workspace=ws), "schema", "observations")
    ws = small_workspace()
    ws["channels"][0]["samples"][0]["data"] = "lots"
    rejected(body(workspace=ws), "schema", "channels[0].samples[0].data")


@pytest.mark.parametrize("version", ["../../../etc/passwd", "2.0.0", "1.0", 1, None])
def test_unsupported_version_never_reaches_a_schema_file(version, monkeypatch):
    def forbidden(*_args, **_kwargs):
        raise AssertionError("pyhf.schema.validate called with an unchecked version")

    monkeypatch.setattr(pyhf.schema, "validate", forbidden)
    ws = small_workspace()
    ws["version"] = version
    rejected(body(workspace=ws), "version", "not supported", "1.0.0")


def test_observations_of_wrong_length():
    ws = small_workspace()
    ws["observations"][0]["data"] = [51.0, 48.0, 3.0]
    rejected(body(workspace=ws), "observations", "SR", "3 entries", "2 bins")


def test_channel_without_observations():
    ws = small_workspace()
    ws["observations"] = ws["observations"][:1]
    rejected(body(workspace=ws), "CR", "no observations")


def test_sample_and_modifier_data_of_wrong_length():
    ws = small_workspace()
    ws["channels"][0]["samples"][1]["data"] = [50.0]
    rejected(body(workspace=ws), "samples[1]", "data", "expected 2")
    ws = small_workspace()
    ws["channels"][0]["samples"][1]["modifiers"][0]["data"] = [3.0]
    rejected(body(workspace=ws), "shapesys", "expected 2")


def test_unknown_poi():
    ws = small_workspace()
    ws["measurements"][0]["config"]["poi"] = "mu_typo"
    rejected(body(workspace=ws), "POI", "mu_typo", "not a parameter")


def test_poi_with_several_parameters():
    ws = small_workspace()
    ws["measurements"][0]["config"]["poi"] = "bkg_unc"
    rejected(body(workspace=ws), "POI", "bkg_unc", "single parameter")


def test_unknown_measurement():
    rejected(body(measurement="other"), "measurement", "other", "meas")


@pytest.mark.parametrize(
    ("parameter", "words"),
    [
        ({"name": "bkg_unc", "bounds": [[0.0, 10.0]]}, ("bounds", "bkg_unc", "1 entries", "2")),
        ({"name": "mu", "bounds": [[0.0, 5.0, 9.0]]}, ("bounds", "mu", "[low, high]")),
        ({"name": "mu", "bounds": [[10.0, 0.0]]}, ("bounds", "mu", "reversed")),
        ({"name": "mu", "bounds": [[1.0, 1.0]]}, ("bounds", "mu", "reversed")),
        ({"name": "bkg_unc", "inits": [1.0]}, ("inits", "bkg_unc", "1 entries")),
        ({"name": "mu", "inits": [20.0], "bounds": [[0.0, 10.0]]}, ("init", "outside", "mu")),
        ({"name": "bkg_unc", "auxdata": [1.0, 1.0, 1.0]}, ("auxdata", "3 entries")),
    ],
)
def test_parameter_bounds_and_inits(parameter, words):
    ws = small_workspace()
    ws["measurements"][0]["config"]["parameters"] = [parameter]
    rejected(body(workspace=ws), *words)


@pytest.mark.parametrize(
    ("limits", "words"),
    [
        (Limits(max_channels=1), ("2 channels", "cap of 1")),
        (Limits(max_bins=2), ("more than 2 bins",)),
        (Limits(max_samples=2), ("more than 2 samples",)),
        (Limits(max_parameters=3), ("4 parameters", "cap of 3")),
        (Limits(max_depth=5), ("nested more than 5",)),
    ],
)
def test_size_caps(limits, words):
    rejected(body(), *words, limits=limits)


def test_default_caps_admit_the_sbottom_workspace(sbottom_regionA_bkg, sbottom_dir):
    ops = json.loads((sbottom_dir / "RegionA" / "patch.sbottom_1300_205_60.json").read_text())
    task = validate_request(body(workspace=sbottom_regionA_bkg, patches=[ops]))
    assert task.patches[0]["name"] == "patch_0"


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"tset_stat": "q"}, ("unknown setting", "tset_stat")),
        ({"test_stat": "q0"}, ("test_stat", "q0", "qtilde")),
        ({"calctype": "toybased"}, ("calctype", "toybased", "asymptotics")),
        ({"normsys_interpcode": "code0"}, ("normsys_interpcode", "code0", "code4")),
        ({"histosys_interpcode": "code1"}, ("histosys_interpcode", "code4p")),
        ({"optimizer": "adam"}, ("optimizer", "adam", "scipy")),
        ({"backend": "jax"}, ("backend", "jax", "numpy")),
        ({"engine": "gpu"}, ("engine", "gpu", "batched")),
        ({"tolerance": 0}, ("tolerance", "> 0")),
        ({"tolerance": -1e-3}, ("tolerance", "> 0")),
        ({"tolerance": "small"}, ("tolerance", "finite number")),
        ({"maxiter": 0}, ("maxiter", "between 1")),
        ({"maxiter": True}, ("maxiter", "integer")),
        ({"level": 1.5}, ("level", "between 0 and 1")),
        ({"poi_values": []}, ("poi_values", "non-empty")),
        ({"poi_values": ["one"]}, ("poi_values", "finite number")),
        ({"poi_values": [11.0]}, ("poi_values", "11.0", "bounds", "[0.0, 10.0]")),
        ({"poi_values": [-1.0]}, ("poi_values", "outside")),
        ({"poi_values": [1.0] * 101}, ("poi_values", "101", "cap of 100")),
        ({"scan": [5.0, 1.0, 10]}, ("scan", "below")),
        ({"scan": [0.0, 5.0, 1]}, ("scan", "points", "between 2")),
        ({"scan": [0.0, 5.0, 5000]}, ("scan", "points", "201")),
        ({"scan": [0.0, 5.0, 2.5]}, ("scan", "integer")),
        ({"scan": [0.0, 5.0]}, ("scan", "[low, high, points]")),
        ("fast", ("settings", "object")),
    ],
)
def test_bad_settings(settings, words):
    operation = "upper_limit" if isinstance(settings, dict) and "scan" in settings else "hypotest"
    rejected(body(settings=settings, operation=operation), *words)


def test_scan_outside_poi_bounds():
    rejected(body(operation="upper_limit", settings={"scan": [0.0, 50.0, 5]}), "scan", "bounds")


def test_poi_values_checked_against_configured_bounds():
    ws = small_workspace()
    ws["measurements"][0]["config"]["parameters"] = [{"name": "mu", "bounds": [[0.0, 2.0]]}]
    rejected(body(workspace=ws, settings={"poi_values": [3.0]}), "[0.0, 2.0]")
    task = validate_request(body(workspace=ws, settings={"poi_values": [1.5]}))
    assert task.settings.poi_values == (1.5,)


def test_unknown_operation():
    rejected(body(operation="discover"), "operation", "discover", "upper_limit")


def test_settings_round_trip():
    raw = {
        "test_stat": "q",
        "normsys_interpcode": "code1",
        "histosys_interpcode": "code0",
        "tolerance": 1e-4,
        "maxiter": 500,
        "backend": "pytorch",
        "engine": "pyhf",
        "poi_values": 2,
        "scan": [0.0, 3.0, 7],
        "level": 0.1,
    }
    task = validate_request(body(settings=raw, operation="upper_limit"))
    assert task.settings == FitSettings(
        test_stat="q",
        normsys_interpcode="code1",
        histosys_interpcode="code0",
        tolerance=1e-4,
        maxiter=500,
        backend="pytorch",
        engine="pyhf",
        poi_values=(2.0,),
        scan=(0.0, 3.0, 7),
        level=0.1,
    )


# ----------------------------------------------------------------------------- patches


def signal_patch(name: str, yields: list[float]) -> dict:
    return {
        "name": name,
        "patch": [{"op": "replace", "path": "/channels/0/samples/0/data", "value": yields}],
    }


def patchset(workspace: dict, patches: list[dict], **overrides) -> dict:
    spec = {
        "metadata": {
            "name": "grid",
            "references": {"hepdata": "ins0000000"},
            "description": "signal grid",
            "digests": {"sha256": pyhf.utils.digest(workspace)},
            "labels": ["m"],
        },
        "patches": [
            {"metadata": {"name": p["name"], "values": [i]}, "patch": p["patch"]}
            for i, p in enumerate(patches)
        ],
        "version": "1.0.0",
    }
    spec.update(overrides)
    return spec


def test_patch_list_and_names():
    patches = [signal_patch("a", [1.0, 2.0]), signal_patch("b", [3.0, 4.0])]
    task = validate_request(body(patches=patches))
    assert [p["name"] for p in task.patches] == ["a", "b"]
    task = validate_request(body(patches=[p["patch"] for p in patches], patch_names=["patch_1"]))
    assert [p["name"] for p in task.patches] == ["patch_1"]
    rejected(body(patches=patches, patch_names=["c"]), "patch_names", "'c'")


def test_patchset():
    ws = small_workspace()
    spec = patchset(ws, [signal_patch("a", [1.0, 2.0]), signal_patch("b", [3.0, 4.0])])
    task = validate_request(body(workspace=ws, patchset=spec))
    assert [p["name"] for p in task.patches] == ["a", "b"]
    assert task.patches[1]["patch"][0]["value"] == [3.0, 4.0]


def test_patchset_for_another_workspace():
    ws = small_workspace()
    other = copy.deepcopy(ws)
    other["observations"][1]["data"] = [99.0]
    spec = patchset(other, [signal_patch("a", [1.0, 2.0])])
    rejected(body(workspace=ws, patchset=spec), "patchset", "different workspace")


def test_patchset_bad_version_and_schema():
    ws = small_workspace()
    rejected(
        body(workspace=ws, patchset=patchset(ws, [signal_patch("a", [1.0, 2.0])], version="../x")),
        "patchset version",
        "not supported",
    )
    broken = patchset(ws, [signal_patch("a", [1.0, 2.0])])
    del broken["metadata"]["labels"]
    rejected(body(workspace=ws, patchset=broken), "patchset", "schema", "labels")


def test_patchset_and_patches_together():
    ws = small_workspace()
    p = [signal_patch("a", [1.0, 2.0])]
    rejected(body(workspace=ws, patchset=patchset(ws, p), patches=p), "either patchset or patches")


@pytest.mark.parametrize(
    ("ops", "words"),
    [
        (
            [{"op": "remove", "path": "/channels/7"}],
            ("does not apply", "remove /channels/7", "out of range"),
        ),
        (
            [{"op": "replace", "path": "/channels/0/nosuch", "value": 1}],
            ("does not apply", "'nosuch'"),
        ),
        ([{"op": "test", "path": "/version", "value": "0.1"}], ("does not apply", "test failed")),
        ([{"op": "add", "path": "/channels/01/samples/-", "value": {}}], ("not an array index",)),
        ([{"op": "frobnicate", "path": "/channels"}], ("patches[0]", "schema")),
        (
            [{"op": "add", "path": "/channels/0/samples/-", "value": {"name": "s", "data": "x"}}],
            ("schema",),
        ),
        ([{"op": "replace", "path": "/version", "value": "1.0.1"}], ("version",)),
        ([{"op": "remove", "path": "/observations/1"}], ("CR", "no observations")),
        ([{"op": "move", "from": "/channels", "path": "/channels/0/x"}], ("own children",)),
    ],
)
def test_patch_that_does_not_apply(ops, words):
    rejected(body(patches=[ops]), *words)


def test_patch_caps():
    patches = [signal_patch(f"p{i}", [1.0, 2.0]) for i in range(4)]
    rejected(body(patches=patches), "4 patches", "cap of 3", limits=Limits(max_patches=3))


def test_patched_workspace_is_checked_like_the_base():
    grow = {
        "op": "add",
        "path": "/channels/0/samples/-",
        "value": {"name": "extra", "data": [1.0, 2.0, 3.0], "modifiers": []},
    }
    rejected(body(patches=[[grow]]), "patched with 'patch_0'", "3 entries", "expected 2")


def test_patch_application_matches_jsonpatch_and_leaves_base_untouched():
    ws = small_workspace()
    before = copy.deepcopy(ws)
    ops = [
        {"op": "add", "path": "/channels/0/samples/-", "value": {"name": "x", "data": [1, 2]}},
        {"op": "replace", "path": "/channels/0/samples/1/data/0", "value": 7.5},
        {"op": "copy", "from": "/channels/1", "path": "/channels/-"},
        {"op": "move", "from": "/observations/0", "path": "/observations/1"},
        {"op": "remove", "path": "/channels/1/samples/0/modifiers/0"},
        {"op": "test", "path": "/channels/0/samples/2/name", "value": "x"},
        {"op": "add", "path": "/measurements/0/config/parameters/0", "value": {"name": "mu"}},
        {"op": "replace", "path": "/channels/2/name", "value": "CR2"},
    ]
    ours = apply_patch(ws, {"name": "p", "patch": ops})
    assert ours == jsonpatch.apply_patch(before, ops)
    assert ws == before


def test_sbottom_patches_apply_like_jsonpatch(sbottom_regionA_bkg, sbottom_dir):
    before = canonical_sha256(sbottom_regionA_bkg)
    for path in sorted((sbottom_dir / "RegionA").glob("patch.*.json"))[:5]:
        ops = json.loads(path.read_text())
        ours = apply_patch(sbottom_regionA_bkg, {"name": path.stem, "patch": ops})
        assert ours == jsonpatch.apply_patch(sbottom_regionA_bkg, ops)
    assert canonical_sha256(sbottom_regionA_bkg) == before


# ----------------------------------------------------------------------------- hashing


def test_canonical_sha256_ignores_key_order_and_whitespace():
    ws = small_workspace()
    reordered = json.loads(json.dumps(ws, sort_keys=True, indent=3))
    reordered = dict(reversed(list(reordered.items())))
    assert canonical_sha256(ws) == canonical_sha256(reordered)
    ws["observations"][0]["data"][0] = 51.5
    assert canonical_sha256(ws) != canonical_sha256(reordered)
    assert re.fullmatch(r"[0-9a-f]{64}", canonical_sha256(ws))


def test_parse_body_accepts_str_and_bytes():
    assert parse_body('{"a": 1}') == parse_body(b'{"a": 1}') == {"a": 1}


# ----------------------------------------------------------------------------- fuzzing

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _paths(value, prefix=()):
    """Every location inside a JSON value, as a tuple of keys/indices."""
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _paths(child, (*prefix, index))


_REQUEST = {
    "workspace": small_workspace(),
    "patches": [signal_patch("a", [1.0, 2.0])],
    "operation": "upper_limit",
    "settings": {"scan": [0.0, 5.0, 3], "tolerance": 0.01, "poi_values": [1.0]},
}
_LOCATIONS = [p for p in _paths(_REQUEST) if p]


@settings(max_examples=300, deadline=None)
@given(location=st.sampled_from(_LOCATIONS), value=json_values)
def test_any_corruption_is_a_validation_error_or_a_valid_task(location, value):
    request = copy.deepcopy(_REQUEST)
    parent = request
    for key in location[:-1]:
        parent = parent[key]
    parent[location[-1]] = value
    try:
        validate_request(json.dumps(request).encode())
    except ValidationError as exc:
        message = exc.message
    else:
        return
    assert message
    assert "Traceback" not in message


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(raw):
    with contextlib.suppress(ValidationError):
        validate_request(raw)


# ----------------------------------------------------------------------------- bounded work


def amplification_body(copies: int = 21) -> bytes:
    """The issue's request bomb: about 1.5 kB whose ``copy`` operations each double the
    workspace (21 of them cost 6.8 s and 440 MiB before the cap)."""
    ops = [{"op": "copy", "from": "/channels", "path": "/channels/-"} for _ in range(copies)]
    return body(patches=[{"name": "boom", "patch": ops}])


def test_a_doubling_patch_is_refused_fast_with_bounded_memory():
    raw = amplification_body()
    assert len(raw) < 2500
    import tracemalloc

    tracemalloc.start()
    try:
        start = time.perf_counter()
        with pytest.raises(ValidationError) as info:
            validate_request(raw)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = info.value.message
    assert info.value.status == 413
    assert info.value.field == "patches"
    assert "'boom' is too large" in message
    assert "copy operations" in message
    assert str(validation.DEFAULT_LIMITS.max_copied_nodes) in message
    assert elapsed < 0.5, elapsed
    assert peak < 8 * 1024 * 1024, peak


def test_the_document_size_cap_holds_for_values_the_patch_carries():
    big = {"op": "add", "path": "/measurements/0/config/extra", "value": list(range(500))}
    msg = rejected(
        body(patches=[[big]]), "more than 400 JSON values", limits=Limits(max_document_nodes=400)
    )
    assert "patch_0" in msg


def test_operations_and_work_per_request_are_capped_before_any_patch_is_applied():
    patches = [signal_patch(f"p{i}", [1.0, 2.0]) for i in range(20)]
    nodes = Sizer().measure(small_workspace())[0]
    msg = rejected(
        body(patches=patches),
        "20 patches",
        f"{20 * nodes} units of work",
        "split the patches",
        limits=Limits(max_work_nodes=19 * nodes),
    )
    assert f"limit of {19 * nodes}" in msg
    rejected(
        body(patches=patches),
        "20 JSON Patch operations",
        "limit of 19 per request",
        limits=Limits(max_operations=19),
    )
    many = [{"op": "add", "path": f"/measurements/0/config/k{i}", "value": i} for i in range(6)]
    rejected(
        body(patches=[many]), "6 operations", "limit of 5", limits=Limits(max_patch_operations=5)
    )
    # 10**4 patches of a large workspace: refused up front, without applying one (what it
    # costs is the schema check of each patch, proportional to the body)
    start = time.perf_counter()
    rejected(
        {
            "workspace": small_workspace(),
            "patches": [signal_patch(f"q{i}", [1.0, 2.0]) for i in range(10_000)],
        },
        "10000 patches",
        limits=Limits(max_work_nodes=10**5),
    )
    assert time.perf_counter() - start < 5.0


def test_a_patched_document_cannot_nest_past_the_depth_cap():
    nest = [{"op": "copy", "from": "/measurements/0/config", "path": "/measurements/0/config/x"}]
    rejected(body(patches=[nest * 80]), "levels deep", "limit of 64")


def test_the_sbottom_patchset_passes_the_default_caps(sbottom_regionA_bkg, sbottom_dir):
    patches = [
        {"name": path.stem, "patch": json.loads(path.read_text())}
        for path in sorted((sbottom_dir / "RegionA").glob("patch.*.json"))
    ]
    assert len(patches) == 217
    task = validate_payload({"workspace": sbottom_regionA_bkg, "patches": patches})
    assert len(task.patches) == 217


def test_the_depth_scan_is_linear_on_unterminated_strings():
    # a quote followed by escaped quotes: the old pattern rescanned to the end from every
    # quote (quadratic: 16 kB took 1 s, 1 MB would take an hour)
    raw = '"' + '\\"' * 200_000
    start = time.perf_counter()
    rejected(raw.encode(), "not valid JSON")
    assert time.perf_counter() - start < 0.5


# ----------------------------------------------------------------------------- patched types


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("/channels/0/name", {"an": "object"}),
        ("/channels/0/name", ["a", "list"]),
        ("/channels/1/name", 7),
        ("/observations/0/name", {"x": 1}),
        ("/measurements/0/name", []),
        ("/measurements/0/config/poi", {"mu": 1}),
        ("/channels/0/samples", {"not": "a list"}),
        ("/channels/1", "a channel"),
    ],
)
def test_a_patch_that_gives_a_structural_field_the_wrong_type_is_a_400(path, value):
    patch = [{"op": "replace", "path": path, "value": value}]
    with pytest.raises(ValidationError) as info:
        validate_request(body(patches=[patch]))
    assert info.value.status == 400
    assert info.value.field == "patches"
    assert "patched with 'patch_0'" in info.value.message


_WORKSPACE_LOCATIONS = [p for p in _paths(small_workspace()) if p]


@settings(max_examples=300, deadline=None)
@given(location=st.sampled_from(_WORKSPACE_LOCATIONS), value=json_values)
def test_any_patch_value_anywhere_is_a_validation_error_or_a_valid_task(location, value):
    pointer = "/" + "/".join(str(step).replace("~", "~0").replace("/", "~1") for step in location)
    raw = body(patches=[[{"op": "replace", "path": pointer, "value": value}]])
    try:
        validate_request(raw)
    except ValidationError as exc:
        message = exc.message
    else:
        return
    assert message
    assert "Traceback" not in message


def test_a_model_whose_size_grows_faster_than_the_body_is_refused():
    """pyhf builds arrays of modifiers x samples x bins for every fit: 200 one-bin channels
    of 5 samples and 2,600 normsys modifiers on one sample are a 250 kB body but 5.2e8
    entries (about 0.5 GB and 10 s of pyhf per fit, growing with the product)."""
    channels = [
        {
            "name": f"c{c}",
            "samples": [{"name": f"s{s}", "data": [1.0], "modifiers": []} for s in range(5)],
        }
        for c in range(200)
    ]
    channels[0]["samples"][0]["modifiers"] = [
        {"name": "mu", "type": "normfactor", "data": None}
    ] + [{"name": f"n{j}", "type": "normsys", "data": {"hi": 1.1, "lo": 0.9}} for j in range(2600)]
    workspace = {
        "version": "1.0.0",
        "channels": channels,
        "observations": [{"name": f"c{c}", "data": [1.0]} for c in range(200)],
        "measurements": [{"name": "m", "config": {"poi": "mu", "parameters": []}}],
    }
    raw = json.dumps({"workspace": workspace}).encode()
    assert len(raw) < 300_000
    start = time.perf_counter()
    with pytest.raises(ValidationError) as info:
        validate_request(raw)
    assert time.perf_counter() - start < 3.0
    assert info.value.status == 413
    assert "2601 modifiers x 1000 samples x 200 bins = 520200000" in info.value.message
    assert "limit of 500000000" in info.value.message
    # 2,399 modifiers: under the limit
    channels[0]["samples"][0]["modifiers"] = channels[0]["samples"][0]["modifiers"][:2400]
    validate_payload({"workspace": workspace})
