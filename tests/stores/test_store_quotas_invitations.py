import threading
from datetime import UTC, datetime, timedelta

import pytest

from afhub.groups.tree import PermissionDenied, Role
from afhub.quotas.limits import InvalidQuota, Limits
from afhub.stores.errors import (
    AlreadyExists,
    InvitationExpired,
    InvitationNotFound,
    InvitationRevoked,
    InvitationUsedUp,
    InvitationWrongEmail,
    NotFound,
    StoreError,
)
from afhub.stores.facade import Stores
from afhub.stores.invitations import Joined

T0 = datetime(2026, 11, 10, 8, 0, tzinfo=UTC)


@pytest.fixture
def tree(stores):
    for path in ["atlas", "atlas/higgs", "atlas/higgs/students", "atlas/top"]:
        stores.groups.create(path)
    stores.groups.add_member("atlas/higgs", "hana", role="admin")
    return stores


def test_quota_set_show_and_partial_update(tree):
    tree.quotas.set("atlas", {"gpu_hours": 100, "max_servers": 10})
    tree.quotas.set("atlas", {"max_servers": None, "period": "rolling:30d"})
    assert tree.quotas.get("atlas") == Limits(gpu_hours=100, period="rolling:30d")
    assert tree.quotas.get("atlas/top") == Limits()
    assert tree.quotas.all() == {"atlas": Limits(gpu_hours=100, period="rolling:30d")}
    tree.quotas.clear("atlas")
    assert tree.quotas.get("atlas") == Limits()


@pytest.mark.parametrize(
    "values", [{"gpu_hours": -1}, {"gpu_hours": "ten"}, {"max_servers": 2.5}, {"bogus": 1}]
)
def test_bad_quotas_change_nothing(tree, values):
    tree.quotas.set("atlas", {"gpu_hours": 5})
    with pytest.raises(InvalidQuota):
        tree.quotas.set("atlas", values)
    assert tree.quotas.get("atlas") == Limits(gpu_hours=5)


def test_group_admin_sets_quotas_within_its_own(tree):
    tree.quotas.set("atlas", {"gpu_hours": 100})
    tree.quotas.set("atlas/higgs", {"gpu_hours": 50, "max_servers": 4})
    hana = tree.groups.actor("hana")
    tree.quotas.set("atlas/higgs/students", {"gpu_hours": 20, "max_servers": 4}, actor=hana)
    with pytest.raises(InvalidQuota, match="'atlas/higgs'"):
        tree.quotas.set("atlas/higgs/students", {"gpu_hours": 60}, actor=hana)
    with pytest.raises(PermissionDenied):
        tree.quotas.set("atlas/higgs", {"gpu_hours": 100}, actor=hana)
    with pytest.raises(PermissionDenied):
        tree.quotas.set("atlas/top", {"gpu_hours": 1}, actor=hana)
    assert tree.quotas.get("atlas/higgs/students").gpu_hours == 20


def test_invitation_redeem_once(tree):
    hana = tree.groups.actor("hana")
    created = tree.invitations.create("atlas/higgs/students", actor=hana, now=T0)
    assert len(created.token) >= 40
    member = tree.invitations.redeem(created.token, user="sam", now=T0 + timedelta(hours=1))
    assert (member.group, member.role) == ("atlas/higgs/students", Role.MEMBER)
    assert tree.groups.user("sam").default_group == "atlas/higgs/students"
    with pytest.raises(InvitationUsedUp, match="used up"):
        tree.invitations.redeem(created.token, user="sue", now=T0 + timedelta(hours=1))
    (listed,) = tree.invitations.list("atlas/higgs/students", actor=hana)
    assert listed.status(T0) == "used"
    assert listed.joined == (Joined("sam", T0 + timedelta(hours=1)),)
    assert tree.invitations.get(listed.id, actor=hana).joined == listed.joined


def test_invitation_refusals(tree):
    hana = tree.groups.actor("hana")
    inv = tree.invitations
    expired = inv.create("atlas/higgs", actor=hana, expires_in=timedelta(hours=1), now=T0)
    with pytest.raises(InvitationExpired, match="expired"):
        inv.redeem(expired.token, user="sam", now=T0 + timedelta(hours=2))
    revoked = inv.create("atlas/higgs", actor=hana, now=T0)
    inv.revoke(revoked.info.id, actor=hana)
    with pytest.raises(InvitationRevoked, match="revoked"):
        inv.redeem(revoked.token, user="sam", now=T0)
    bound = inv.create("atlas/higgs", actor=hana, email="Sam@Example.edu", now=T0)
    with pytest.raises(InvitationWrongEmail, match="different email"):
        inv.redeem(bound.token, user="eve", email="eve@example.edu", now=T0)
    with pytest.raises(InvitationWrongEmail):
        inv.redeem(bound.token, user="eve", now=T0)
    with pytest.raises(InvitationNotFound):
        inv.redeem("x" * 43, user="sam", now=T0)
    assert tree.groups.roles_of("sam") == {}
    assert tree.groups.roles_of("eve") == {}
    inv.redeem(bound.token, user="sam", email="sam@example.edu", now=T0)
    assert tree.groups.roles_of("sam") == {"atlas/higgs": Role.MEMBER}
    multi = inv.create("atlas/higgs", actor=hana, uses=3, now=T0)
    with pytest.raises(AlreadyExists):
        inv.redeem(multi.token, user="sam", now=T0)
    assert inv.get(multi.info.id).uses_left == 3


def test_invitation_list_covers_the_subtree_only(tree):
    for path in ["a_b", "axb", "axb/c"]:
        tree.groups.create(path)
    tree.invitations.create("axb/c")  # 'a_b/%' as a LIKE pattern would match 'axb/c'

    tree.invitations.create("atlas/higgs/students")
    assert tree.invitations.list("a_b", include_subgroups=True) == []
    assert [i.group for i in tree.invitations.list("atlas", include_subgroups=True)] == [
        "atlas/higgs/students"
    ]
    assert tree.invitations.list("atlas") == []


def test_invitation_creation_rules(tree):
    hana = tree.groups.actor("hana")
    with pytest.raises(PermissionDenied):
        tree.invitations.create("atlas/top", actor=hana)
    # an invitation the actor may not manage reads like one that does not exist (issue 11)
    other = tree.invitations.create("atlas/top").info.id
    with pytest.raises(NotFound) as refused:
        tree.invitations.revoke(other, actor=hana)
    with pytest.raises(NotFound) as missing:
        tree.invitations.revoke("A" * 22, actor=hana)
    assert str(refused.value).replace(other, "ID") == str(missing.value).replace("A" * 22, "ID")
    assert "atlas" not in str(refused.value)
    assert tree.invitations.get(other).revoked_at is None
    for kwargs in (
        {"uses": 0},
        {"uses": -1},
        {"expires_in": timedelta(0)},
        {"email": "not-an-email"},
        {"email": "<a@b.c>"},
        {"role": "owner"},
    ):
        with pytest.raises((StoreError, ValueError)):
            tree.invitations.create("atlas/higgs", actor=hana, **kwargs)
    assert len(tree.invitations.list("atlas/higgs")) == 0


def test_single_use_invitation_under_concurrent_redemption(tree, db_url):
    created = tree.invitations.create("atlas/top", now=T0)
    n = 12
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n
    opened = Stores.open(db_url, migrate=False)

    def worker(i):
        barrier.wait()
        try:
            results[i] = opened.invitations.redeem(created.token, user=f"u{i}", now=T0)
        except StoreError as exc:  # a refusal: checked below
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    opened.close()
    winners = [r for r in results if not isinstance(r, Exception)]
    assert len(winners) == 1
    assert all(isinstance(r, InvitationUsedUp) for r in results if isinstance(r, Exception))
    assert list(tree.groups.members("atlas/top")) == [winners[0]]


def test_admins_to_ask_walk_up_the_tree(stores):
    for path in ["atlas", "atlas/higgs", "atlas/higgs/students", "atlas/top", "cms"]:
        stores.groups.create(path)
    assert stores.quotas.admins_to_ask("atlas/higgs/students") == []  # none anywhere
    stores.groups.add_member("atlas", "ada", role="admin")
    stores.groups.add_member("atlas", "bob", role="admin")
    stores.groups.add_member("atlas/higgs", "mo")  # a member, not an admin
    assert stores.quotas.admins_to_ask("atlas/higgs/students") == ["ada", "bob"]
    stores.groups.add_member("atlas/higgs", "hana", role="admin")
    assert stores.quotas.admins_to_ask("atlas/higgs/students") == ["hana"]
    assert stores.quotas.admins_to_ask("atlas/higgs") == ["hana"]
    assert stores.quotas.admins_to_ask("atlas/top") == ["ada", "bob"]
    assert stores.quotas.admins_to_ask("cms") == []
    with pytest.raises(NotFound):
        stores.quotas.admins_to_ask("atlas/nosuch")
