"""The hub's admin "Manage Groups" never silently loses an edit: an edit there (the hub's
REST API, which that page calls) flows into afhub at the accountant's next round, and the
mirror keeps it instead of undoing it."""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from afhub.groups.mirror import MirrorPlan, hub_edits


def test_hub_edits_are_what_changed_since_the_last_mirror():
    last = {"atlas": {"ann"}, "atlas/higgs": {"hana"}, "cms": set()}
    hub = {"atlas": {"ann", "new"}, "atlas/higgs": set(), "lhcb": {"lea"}, "other": {"x"}}
    assert hub_edits(last, hub, last) == MirrorPlan(
        create_groups=["lhcb", "other"],
        delete_groups=["cms"],
        add_members={"atlas": ["new"], "lhcb": ["lea"], "other": ["x"]},
        remove_members={"atlas/higgs": ["hana"]},
    )
    assert hub_edits(last, last, last).empty


def test_what_afhub_already_has_is_no_edit():
    """The login hook put a person in the hub groups afhub has for them (or took them out):
    not an edit to apply again (it would reset an admin's role to member)."""
    last = {"atlas": {"ann"}, "cms": {"carl"}}
    hub = {"atlas": {"ann", "boss"}, "cms": set(), "new": set()}
    afhub = {"atlas": {"ann", "boss"}, "cms": set(), "new": set()}
    assert hub_edits(last, hub, afhub).empty


@pytest.mark.facility
@pytest.mark.slow
def test_a_member_added_in_manage_groups_stays_and_reaches_afhub(facility):
    token = facility.admin_token()
    headers = {"Authorization": f"token {token}"}
    group, user = f"mg{uuid.uuid4().hex[:6]}", f"mg-{uuid.uuid4().hex[:6]}"
    facility.login(user, facility.add_user(user))
    api = facility.url + "services/facility/api/"
    assert requests.post(api + "groups", json={"path": group}, headers=headers, timeout=30).ok
    hub_group = facility.api_url + f"groups/{group}"
    deadline = time.monotonic() + 150
    while requests.get(hub_group, headers=headers, timeout=30).status_code != 200:
        assert time.monotonic() < deadline, "the accountant never mirrored the new group"
        time.sleep(2)
    # what Manage Groups does when an admin adds a member
    added = requests.post(hub_group + "/users", json={"users": [user]}, headers=headers, timeout=30)
    assert added.ok, added.text
    members = api + f"groups/{group}/-/members"
    while user not in {
        m["user"] for m in requests.get(members, headers=headers, timeout=30).json()["members"]
    }:
        assert time.monotonic() < deadline, "the edit in the hub did not reach afhub"
        time.sleep(2)
    row = next(
        m
        for m in requests.get(members, headers=headers, timeout=30).json()["members"]
        if m["user"] == user
    )
    assert row["source"] == "hub"
    assert user in requests.get(hub_group, headers=headers, timeout=30).json()["users"]
