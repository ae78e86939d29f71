import pytest

from afhub.groups.tree import (
    Action,
    Actor,
    PermissionDenied,
    Role,
    TreeError,
    ancestors,
    chain,
    descendants,
    is_ancestor_or_self,
    may,
    plan_move,
    require,
    require_may_grant_facility_admin,
    visible_groups,
)

TREE = [
    "atlas",
    "atlas/higgs",
    "atlas/higgs/students",
    "atlas/top",
    "atlasx",
    "cms",
]


def test_ancestors_and_chain():
    assert ancestors("atlas/higgs/students") == ["atlas", "atlas/higgs"]
    assert ancestors("atlas") == []
    assert chain("atlas/higgs") == ["atlas", "atlas/higgs"]


def test_prefix_is_not_ancestry():
    assert not is_ancestor_or_self("atlas", "atlasx")
    assert is_ancestor_or_self("atlas", "atlas/top")
    assert descendants("atlas", TREE) == ["atlas/higgs", "atlas/higgs/students", "atlas/top"]


def test_move_renames_the_subtree():
    assert plan_move("atlas/higgs", "cms", TREE) == {
        "atlas/higgs": "cms/higgs",
        "atlas/higgs/students": "cms/higgs/students",
    }
    assert plan_move("atlas/top", None, TREE) == {"atlas/top": "top"}
    assert plan_move("atlas/top", "atlas", TREE) == {}


@pytest.mark.parametrize(
    ("path", "dest", "fragment"),
    [
        ("atlas", "atlas/higgs/students", "cycle"),
        ("atlas/higgs", "atlas/higgs", "cycle"),
        ("atlas/higgs", "nope", "does not exist"),
        ("nope", "atlas", "does not exist"),
        ("atlas/higgs/students", "atlas", "already exists"),
    ],
)
def test_bad_moves_are_refused(path, dest, fragment):
    with pytest.raises(TreeError) as info:
        plan_move(path, dest, [*TREE, "atlas/students"])
    assert fragment in str(info.value)


def test_move_too_deep_is_refused():
    deep = ["a", "a/b", "a/b/c", "a/b/c/d", "a/b/c/d/e", "a/b/c/d/e/f", "x", "x/y", "x/y/z"]
    with pytest.raises(TreeError, match="levels deep"):
        plan_move("x", "a/b/c/d/e/f", deep)


HIGGS_ADMIN = Actor("hana", roles={"atlas/higgs": Role.ADMIN})
STUDENT = Actor("sam", roles={"atlas/higgs/students": Role.MEMBER})
FACILITY = Actor("root", is_facility_admin=True)


def test_group_admin_manages_its_subtree():
    for action in (Action.MANAGE_MEMBERS, Action.CREATE_SUBGROUP, Action.MANAGE_INVITATIONS):
        assert may(HIGGS_ADMIN, action, "atlas/higgs")
        assert may(HIGGS_ADMIN, action, "atlas/higgs/students")
    for action in (Action.SET_QUOTA, Action.DELETE, Action.MOVE):
        assert may(HIGGS_ADMIN, action, "atlas/higgs/students")
        # never its own group: no admin raises their own limit or deletes their own group
        assert not may(HIGGS_ADMIN, action, "atlas/higgs")


@pytest.mark.parametrize("target", ["atlas", "atlas/top", "cms", "atlasx"])
@pytest.mark.parametrize("action", list(Action))
def test_group_admin_cannot_act_on_parent_or_sibling(action, target):
    assert not may(HIGGS_ADMIN, action, target)
    with pytest.raises(PermissionDenied, match="hana may not"):
        require(HIGGS_ADMIN, action, target)


def test_member_reads_own_group_only():
    assert may(STUDENT, Action.READ_USAGE, "atlas/higgs/students")
    assert not may(STUDENT, Action.READ_USAGE, "atlas/higgs")
    assert not may(STUDENT, Action.READ_USAGE, "atlas/top")
    assert not may(STUDENT, Action.MANAGE_MEMBERS, "atlas/higgs/students")
    assert not may(STUDENT, Action.MANAGE_INVITATIONS, "atlas/higgs/students")


def test_top_level_and_facility_admin_grants():
    assert may(FACILITY, Action.CREATE_SUBGROUP, None)
    with pytest.raises(PermissionDenied, match="top-level"):
        require(HIGGS_ADMIN, Action.CREATE_SUBGROUP, None)
    with pytest.raises(PermissionDenied, match="facility admin"):
        require_may_grant_facility_admin(HIGGS_ADMIN)
    require_may_grant_facility_admin(FACILITY)
    assert all(may(FACILITY, a, p) for a in Action for p in TREE)


def test_visible_groups():
    assert visible_groups(HIGGS_ADMIN, TREE) == ["atlas/higgs", "atlas/higgs/students"]
    assert visible_groups(STUDENT, TREE) == ["atlas/higgs/students"]
    assert visible_groups(FACILITY, TREE) == sorted(TREE)


def test_role_parse():
    assert Role.parse("admin") is Role.ADMIN
    with pytest.raises(ValueError, match="unknown role"):
        Role.parse("owner")
