import pytest

from afhub.groups.names import (
    MAX_DEPTH,
    MAX_PATH_LENGTH,
    InvalidGroupName,
    depth,
    join_path,
    leaf_name,
    parent_path,
    validate_path,
    validate_segment,
)


@pytest.mark.parametrize("path", ["atlas", "atlas/higgs", "atlas/higgs/students", "cms-2", "a.b_c"])
def test_valid_paths_pass_unchanged(path):
    assert validate_path(path) == path


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("", "must not be empty"),
        ("/atlas", "must not start or end with '/'"),
        ("atlas/", "must not start or end with '/'"),
        ("atlas//higgs", "empty part"),
        ("atlas/../cms", "'..'"),
        ("a..b", "'..'"),
        ("atlas/hig\x00gs", "control character"),
        ("atlas\nhiggs", "control character"),
        ("atlas\u200bx", "control character"),
        ("<script>", "HTML"),
        ("atl&as", "HTML"),
        ('a"b', "HTML"),
        ("Atlas", "lowercase"),
        ("-atlas", "starting with a letter or digit"),
        (".hidden", "starting with a letter or digit"),
        ("at las", "whitespace"),
        ("ätlas", "lowercase"),
        ("a" * 64, "limit is 63"),
        ("/".join(["a"] * (MAX_DEPTH + 1)), f"limit is {MAX_DEPTH}"),
        ("/".join(["a" * 60] * 5), f"limit is {MAX_PATH_LENGTH}"),
    ],
)
def test_invalid_paths_are_rejected_with_a_reason(path, fragment):
    with pytest.raises(InvalidGroupName, match=None) as info:
        validate_path(path)
    assert fragment in str(info.value)


@pytest.mark.parametrize("value", [None, 3, b"atlas", ["atlas"]])
def test_non_strings_are_rejected(value):
    with pytest.raises(InvalidGroupName, match="must be a string"):
        validate_path(value)


def test_segment_rejects_slash_with_a_hint():
    with pytest.raises(InvalidGroupName, match="create the parent group first"):
        validate_segment("atlas/higgs")


def test_path_helpers():
    assert parent_path("atlas/higgs/students") == "atlas/higgs"
    assert parent_path("atlas") is None
    assert leaf_name("atlas/higgs") == "higgs"
    assert depth("atlas/higgs/students") == 3
    assert join_path(None, "atlas") == "atlas"
    assert join_path("atlas", "higgs") == "atlas/higgs"
    with pytest.raises(InvalidGroupName):
        join_path("atlas", "..")
