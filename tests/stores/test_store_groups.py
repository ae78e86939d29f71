from datetime import UTC, datetime

import pytest

from afhub.groups.names import InvalidGroupName
from afhub.groups.tree import Actor, PermissionDenied, Role
from afhub.quotas.limits import Charge
from afhub.stores.errors import AlreadyExists, Busy, NotAMember, NotFound, StoreError


def make_tree(stores):
    for path in ["atlas", "atlas/higgs", "atlas/higgs/students", "atlas/top", "cms"]:
        stores.groups.create(path)


def test_create_list_and_closure(stores):
    make_tree(stores)
    assert [g.path for g in stores.groups.list()] == [
        "atlas",
        "atlas/higgs",
        "atlas/higgs/students",
        "atlas/top",
        "cms",
    ]
    assert [g.path for g in stores.groups.list("atlas/higgs")] == [
        "atlas/higgs",
        "atlas/higgs/students",
    ]
    info = stores.groups.get("atlas/higgs/students")
    assert (info.parent, info.depth) == ("atlas/higgs", 3)


@pytest.mark.parametrize(
    ("path", "error"),
    [
        ("atlas", AlreadyExists),
        ("nope/child", NotFound),
        ("atlas/../cms", InvalidGroupName),
        ("/atlas", InvalidGroupName),
        ("<b>x</b>", InvalidGroupName),
    ],
)
def test_bad_creates_change_nothing(stores, path, error):
    make_tree(stores)
    before = stores.groups.list()
    with pytest.raises(error):
        stores.groups.create(path)
    assert stores.groups.list() == before


def test_move_updates_paths_and_ancestry(stores):
    make_tree(stores)
    stores.groups.move("atlas/higgs", "cms")
    assert [g.path for g in stores.groups.list("cms")] == [
        "cms",
        "cms/higgs",
        "cms/higgs/students",
    ]
    assert [g.path for g in stores.groups.list("atlas")] == ["atlas", "atlas/top"]
    # quotas of the new parent now apply to the moved subtree
    stores.quotas.set("cms", {"max_servers": 0})
    stores.groups.add_member("cms/higgs/students", "sam")
    with pytest.raises(StoreError, match="'cms'"):
        stores.ledger.admit(user="sam", charge=Charge("server", 1))


def test_move_under_own_descendant_is_refused(stores):
    make_tree(stores)
    before = stores.groups.list()
    with pytest.raises(StoreError, match="cycle"):
        stores.groups.move("atlas", "atlas/higgs/students")
    assert stores.groups.list() == before


def test_delete_refuses_subgroups_and_running_servers(stores):
    make_tree(stores)
    with pytest.raises(Busy, match="subgroup"):
        stores.groups.delete("atlas/higgs")
    stores.groups.add_member("atlas/higgs/students", "sam")
    admission = stores.ledger.admit(user="sam", charge=Charge("server", 1))
    with pytest.raises(Busy, match="running"):
        stores.groups.delete("atlas/higgs", recursive=True)
    assert len(stores.groups.list("atlas/higgs")) == 2
    stores.ledger.mark_running(admission.interval_id)
    stores.ledger.close(admission.interval_id)
    assert stores.groups.delete("atlas/higgs", recursive=True) == [
        "atlas/higgs",
        "atlas/higgs/students",
    ]
    # the ledger keeps the history under the old name, and the parent's report still has it
    assert stores.ledger.get(admission.interval_id).group == "atlas/higgs/students"
    report = stores.ledger.usage("atlas", datetime(2000, 1, 1, tzinfo=UTC))
    assert [i.id for i in report.intervals] == [admission.interval_id]
    assert stores.ledger.usage("atlas/top", datetime(2000, 1, 1, tzinfo=UTC)).intervals == []


def test_memberships_roles_and_default_group(stores):
    make_tree(stores)
    stores.groups.add_member("atlas/higgs", "hana", role="admin")
    stores.groups.add_member("atlas/top", "hana")
    user = stores.groups.user("hana")
    assert user.roles == {"atlas/higgs": Role.ADMIN, "atlas/top": Role.MEMBER}
    assert user.default_group == "atlas/higgs"  # the first group joined
    stores.groups.set_default_group("hana", "atlas/top")
    assert stores.groups.resolve_charge_group("hana") == "atlas/top"
    assert stores.groups.resolve_charge_group("hana", "atlas/higgs") == "atlas/higgs"
    with pytest.raises(NotAMember, match="not a member") as existing:
        stores.groups.resolve_charge_group("hana", "cms")
    # a group that does not exist reads like one hana is not in: no existence oracle
    with pytest.raises(NotAMember, match="not a member") as missing:
        stores.groups.resolve_charge_group("hana", "nosuch")
    assert str(missing.value).replace("nosuch", "G") == str(existing.value).replace("cms", "G")
    with pytest.raises(NotAMember) as existing:
        stores.groups.set_default_group("hana", "cms")
    with pytest.raises(NotAMember) as missing:
        stores.groups.set_default_group("hana", "nosuch")
    assert str(missing.value).replace("nosuch", "G") == str(existing.value).replace("cms", "G")
    stores.groups.remove_member("atlas/top", "hana")
    assert stores.groups.user("hana").default_group is None
    assert stores.groups.membership_map()["atlas/higgs"] == {"hana": Role.ADMIN}
    with pytest.raises(NotFound):
        stores.groups.remove_member("atlas/top", "hana")


def test_group_admin_permissions_are_enforced(stores):
    make_tree(stores)
    stores.groups.add_member("atlas/higgs", "hana", role="admin")
    hana = stores.groups.actor("hana")
    stores.groups.create("atlas/higgs/postdocs", actor=hana)
    stores.groups.add_member("atlas/higgs/postdocs", "pia", actor=hana)
    for attempt in (
        lambda: stores.groups.create("atlas/top/x", actor=hana),
        lambda: stores.groups.add_member("atlas", "hana", role="admin", actor=hana),
        lambda: stores.groups.delete("atlas/higgs", actor=hana),
        lambda: stores.groups.create("newroot", actor=hana),
        lambda: stores.groups.set_facility_admin("hana", True, actor=hana),
        lambda: stores.quotas.set("atlas/higgs", {"max_servers": 100}, actor=hana),
    ):
        with pytest.raises(PermissionDenied):
            attempt()
    assert not stores.groups.user("hana").is_facility_admin
    assert "atlas/top/x" not in [g.path for g in stores.groups.list()]
    assert stores.groups.actor("boss", hub_admin=True).is_facility_admin
    assert not Actor("x").is_facility_admin


def test_claims_sync_touches_only_claim_memberships(stores):
    make_tree(stores)
    stores.groups.add_member("atlas", "carl")
    report = stores.groups.sync_claims("carl", ["cms", "atlas/top", "ghost"])
    assert report == {"added": ["atlas/top", "cms"], "removed": [], "unknown": ["ghost"]}
    report = stores.groups.sync_claims("carl", ["cms"])
    assert report == {"added": [], "removed": ["atlas/top"], "unknown": []}
    assert set(stores.groups.roles_of("carl")) == {"atlas", "cms"}


def test_fit_jobs_follow_their_group_not_its_name(stores):
    """Issue 11, finding 6: fit jobs name their group by path; a group deleted (or moved)
    and made again under the name must not be given the old group's jobs."""
    from afhub.stores.fitting import FitStore

    fits = FitStore(stores.db)
    for path in ("atlas", "atlas/higgs", "cms"):
        stores.groups.create(path)

    def job(group):
        return fits.create_job(
            owner="ann",
            group=group,
            operation="fit",
            settings={},
            measurement=None,
            workspace_sha256="0" * 64,
            request={},
            patch_count=1,
            wall_seconds=60,
            max_per_user=10,
            max_per_group=10,
        )

    queued = job("atlas/higgs")
    with pytest.raises(Busy, match="1 queued or running fit job"):
        stores.groups.delete("atlas", recursive=True)
    fits.cancel(queued.id, "ann")
    stores.groups.delete("atlas", recursive=True)
    stores.groups.create("atlas")
    stores.groups.create("atlas/higgs")
    assert fits.get(queued.id).group is None
    assert fits.active_counts("ann", "atlas/higgs")[1] == 0
    # moved: the job follows its group; a new group at the old path is another one
    moved = job("cms")
    stores.groups.move("cms", "atlas")
    stores.groups.create("cms")
    assert fits.get(moved.id).group == "atlas/cms"
    assert fits.active_counts("ann", "cms")[1] == 0
