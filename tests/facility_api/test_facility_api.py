from datetime import UTC, datetime, timedelta

import pytest

from afhub.quotas.limits import Charge


@pytest.fixture
def facility(service):
    """atlas/higgs/students with a facility admin, a higgs admin and a student."""
    root = service.user("root", admin=True)
    for name in ("hana", "tom", "pia"):  # they logged in once (the login hook records them)
        service.stores.groups.ensure_user(name)
    for path in ["atlas", "atlas/higgs", "atlas/higgs/students", "atlas/top"]:
        assert root("POST", "api/groups", json={"path": path}).status_code == 201
    assert root("PUT", "api/groups/atlas/higgs/-/members/hana", json={"role": "admin"}).ok
    assert root("PUT", "api/groups/atlas/top/-/members/tom").ok
    return service


def error_of(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    assert body["error"]
    assert "Traceback" not in response.text
    return body["error"]


def test_no_token_and_forged_token_get_401(facility):
    anonymous = facility.client(None)
    assert "not authenticated" in error_of(anonymous("GET", "api/groups"), 401)
    forged = facility.client("forged-token")
    error_of(forged("GET", "api/groups"), 401)
    error_of(forged("POST", "api/groups", json={"path": "evil"}), 401)
    assert [g.path for g in facility.stores.groups.list()] == [
        "atlas",
        "atlas/higgs",
        "atlas/higgs/students",
        "atlas/top",
    ]


def test_openapi_document_is_served(facility):
    response = facility.client(None)("GET", "api/openapi.yaml")
    assert response.status_code == 200
    assert response.text.startswith("openapi: 3.0.3")


def test_unknown_paths_are_json_404(facility):
    root = facility.user("root", admin=True)
    error_of(root("GET", "api/nothing-here"), 404)
    error_of(root("GET", "api/groups/ghost"), 404)


def test_done_when_scenario(facility):
    """Admin builds the tree, sets quotas and invites a student, who joins; the student
    spawns until the budget is spent and is refused with a clear message."""
    root = facility.user("root", admin=True)
    response = root(
        "PUT", "api/groups/atlas/higgs/students/-/quota", json={"max_servers": 2, "gpu_hours": 1}
    )
    assert response.json()["max_servers"] == 2
    created = root(
        "POST",
        "api/groups/atlas/higgs/students/-/invitations",
        json={"email": "sam@example.edu", "uses": 1},
    ).json()
    assert created["join_url"] == f"/services/afhub/join/{created['token']}"
    facility.stores.groups.ensure_user("sam", email="sam@example.edu")
    sam = facility.user("sam")
    joined = sam("POST", "api/invitations/redeem", json={"token": created["token"]})
    assert joined.json() == {
        "group": "atlas/higgs/students",
        "user": "sam",
        "role": "member",
        "source": "invitation",
    }
    assert sam("GET", "api/users/me").json()["default_group"] == "atlas/higgs/students"
    # spawn (through the stores, as the hub's spawn hook will) until the budget is spent
    ledger = facility.stores.ledger
    start = datetime.now(UTC) - timedelta(hours=1)
    first = ledger.admit(user="sam", charge=Charge("server", 2, 1), now=start)
    ledger.mark_running(first.interval_id, at=start)
    with pytest.raises(Exception, match="GPU-hours budget") as refused:
        ledger.admit(user="sam", charge=Charge("server", 2, 1), server_name="b")
    assert "'atlas/higgs/students'" in str(refused.value)
    quota = sam("GET", "api/groups/atlas/higgs/students/-/quota").json()
    (node,) = quota["chain"]  # the student reads only their own group
    assert node["limits"]["gpu_hours"]["used"] >= 1.0
    # the invitation is single-use
    facility.stores.groups.ensure_user("sue", email="sam@example.edu")
    assert "used up" in error_of(
        facility.user("sue")("POST", "api/invitations/redeem", json={"token": created["token"]}),
        410,
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "api/groups", {"path": "atlas/top/x"}),
        ("POST", "api/groups", {"path": "newroot"}),
        ("PUT", "api/groups/atlas/top/-/members/hana", {"role": "admin"}),
        ("PUT", "api/groups/atlas/-/members/hana", {"role": "admin"}),
        ("PUT", "api/groups/atlas/higgs/-/quota", {"gpu_hours": 1000}),
        ("DELETE", "api/groups/atlas/higgs", None),
        ("DELETE", "api/groups/atlas/top", None),
        ("PATCH", "api/users/hana", {"is_facility_admin": True}),
        ("POST", "api/groups/atlas/top/-/invitations", {}),
        ("GET", "api/groups/atlas/top/-/usage", None),
        ("GET", "api/groups/atlas/-/quota", None),
    ],
)
def test_group_admin_cannot_act_on_siblings_parents_or_grant_itself(facility, method, path, body):
    hana = facility.user("hana")
    before = (facility.stores.groups.membership_map(), facility.stores.quotas.all())
    error_of(hana(method, path, json=body), 403)
    assert (facility.stores.groups.membership_map(), facility.stores.quotas.all()) == before
    assert not facility.stores.groups.actor("hana").is_facility_admin


def test_a_person_who_never_logged_in_is_not_added_and_told_what_to_do(facility):
    root, hana, tom = facility.user("root", admin=True), facility.user("hana"), facility.user("tom")
    before = facility.stores.groups.membership_map()
    message = error_of(root("PUT", "api/groups/atlas/higgs/-/members/nobody"), 404)
    assert "'nobody'" in message
    assert "never logged in" in message
    assert "log in once" in message
    assert "POST /services/facility/api/groups/atlas/higgs/-/invitations" in message
    # only who may manage the members learns whether a name exists
    error_of(tom("PUT", "api/groups/atlas/higgs/-/members/nobody"), 403)
    error_of(facility.client(None)("PUT", "api/groups/atlas/higgs/-/members/nobody"), 401)
    error_of(facility.client("forged")("PUT", "api/groups/atlas/higgs/-/members/nobody"), 401)
    # a missing group is named first
    assert "group" in error_of(root("PUT", "api/groups/atlas/nope/-/members/nobody"), 404)
    assert facility.stores.groups.membership_map() == before
    facility.stores.groups.ensure_user("nobody")  # they log in once
    assert hana("PUT", "api/groups/atlas/higgs/-/members/nobody").json()["role"] == "member"


def test_group_admin_manages_its_subtree(facility):
    hana = facility.user("hana")
    assert hana("POST", "api/groups", json={"path": "atlas/higgs/postdocs"}).status_code == 201
    assert hana("PUT", "api/groups/atlas/higgs/students/-/quota", json={"max_gpus": 2}).ok
    assert hana("PUT", "api/groups/atlas/higgs/postdocs/-/members/pia").ok
    assert [g["path"] for g in hana("GET", "api/groups").json()["groups"]] == [
        "atlas/higgs",
        "atlas/higgs/postdocs",
        "atlas/higgs/students",
    ]
    assert hana("DELETE", "api/groups/atlas/higgs/postdocs/-/members/pia").status_code == 204
    assert hana("DELETE", "api/groups/atlas/higgs/postdocs").json() == {
        "deleted": ["atlas/higgs/postdocs"]
    }


def test_member_cannot_read_another_groups_usage(facility):
    tom = facility.user("tom")
    assert tom("GET", "api/groups/atlas/top/-/usage").ok
    error_of(tom("GET", "api/groups/atlas/higgs/-/usage"), 403)
    error_of(tom("GET", "api/groups/atlas/-/usage"), 403)
    error_of(tom("GET", "api/groups/atlas/higgs/-/members"), 403)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "fragment"),
    [
        ("POST", "api/groups", {"path": "atlas"}, 409, "already exists"),
        ("POST", "api/groups", {"path": ""}, 400, "empty"),
        ("POST", "api/groups", {"path": "atlas/" + "x" * 64}, 400, "limit is 63"),
        ("POST", "api/groups", {"path": "atlas/../etc"}, 400, "'..'"),
        ("POST", "api/groups", {"path": "/atlas/x/"}, 400, "start or end"),
        ("POST", "api/groups", {"path": "atlas/a\u0007b"}, 400, "control character"),
        ("POST", "api/groups", {"path": "atlas/<img>"}, 400, "HTML"),
        ("POST", "api/groups", {"path": 7}, 400, "wrong type"),
        ("POST", "api/groups", "not json", 400, "not valid JSON"),
        ("POST", "api/groups", '"a string"', 400, "JSON object"),
        ("PATCH", "api/groups/atlas", {"parent": "atlas/higgs/students"}, 400, "cycle"),
        ("PATCH", "api/groups/atlas/higgs", {"parent": "atlas/higgs"}, 400, "cycle"),
        ("PUT", "api/groups/atlas/-/quota", {"gpu_hours": -1}, 400, "negative"),
        ("PUT", "api/groups/atlas/-/quota", {"gpu_hours": "lots"}, 400, "number"),
        ("PUT", "api/groups/atlas/-/quota", {"max_servers": 1.5}, 400, "whole number"),
        ("PUT", "api/groups/atlas/-/quota", {"period": "weekly"}, 400, "unknown period"),
        ("PUT", "api/groups/atlas/-/members/x", {"role": "owner"}, 400, "unknown role"),
        ("POST", "api/groups/atlas/-/invitations", {"uses": 0}, 400, "uses"),
        ("POST", "api/groups/atlas/-/invitations", {"email": "x"}, 400, "email"),
        ("GET", "api/groups/atlas/-/usage?since=yesterday", None, 400, "since"),
        ("DELETE", "api/invitations/12345", None, 404, "does not exist"),
    ],
)
def test_bad_input_is_a_clear_4xx_and_changes_nothing(
    facility, method, path, body, status, fragment
):
    root = facility.user("root", admin=True)
    before = (
        [g.path for g in facility.stores.groups.list()],
        facility.stores.quotas.all(),
        facility.stores.groups.membership_map(),
    )
    kwargs = {"json": body} if not isinstance(body, str) else {"data": body}
    assert fragment in error_of(root(method, path, **kwargs), status)
    after = (
        [g.path for g in facility.stores.groups.list()],
        facility.stores.quotas.all(),
        facility.stores.groups.membership_map(),
    )
    assert after == before


def test_invitation_refusals_over_http(facility):
    root = facility.user("root", admin=True)
    bound = root(
        "POST", "api/groups/atlas/top/-/invitations", json={"email": "ann@example.edu"}
    ).json()
    facility.stores.groups.ensure_user("eve", email="eve@example.edu")
    eve = facility.user("eve")
    assert "different email" in error_of(
        eve("POST", "api/invitations/redeem", json={"token": bound["token"]}), 403
    )
    assert root("DELETE", f"api/invitations/{bound['id']}").json()["status"] == "revoked"
    facility.stores.groups.ensure_user("ann", email="ann@example.edu")
    assert "revoked" in error_of(
        facility.user("ann")("POST", "api/invitations/redeem", json={"token": bound["token"]}),
        410,
    )
    error_of(eve("POST", "api/invitations/redeem", json={"token": "x" * 40}), 404)
    listed = root("GET", "api/groups/atlas/-/invitations").json()["invitations"]
    assert [i["status"] for i in listed] == ["revoked"]
    assert "token" not in listed[0]


def test_who_joined_is_read_only_by_who_may_manage_the_invitation(facility):
    root, hana = facility.user("root", admin=True), facility.user("hana")
    created = root("POST", "api/groups/atlas/higgs/students/-/invitations", json={"uses": 3}).json()
    assert created["joined"] == []
    for name in ("sam", "<b>zoe</b>"):
        facility.stores.groups.ensure_user(name)
        redeemed = facility.user(name)(
            "POST", "api/invitations/redeem", json={"token": created["token"]}
        )
        assert redeemed.status_code == 200, redeemed.text
    detail = f"api/invitations/{created['id']}"
    listing = "api/groups/atlas/higgs/students/-/invitations"
    # the facility admin and the admin of a group up the tree, in listing and detail
    for reader in (root, hana):
        (listed,) = reader("GET", listing).json()["invitations"]
        assert [j["user"] for j in listed["joined"]] == ["sam", "<b>zoe</b>"]  # oldest first
        assert listed["joined"][0]["at"] <= listed["joined"][1]["at"]
        assert datetime.fromisoformat(listed["joined"][0]["at"]) <= datetime.now(UTC)
        assert reader("GET", detail).json()["joined"] == listed["joined"]
    # nobody else: a member who joined by it, another group's admin, no token, forged token
    assert root("PUT", "api/groups/atlas/top/-/members/tom", json={"role": "admin"}).ok
    for outsider in (facility.user("sam"), facility.user("tom")):
        error_of(outsider("GET", listing), 403)
        assert "does not exist" in error_of(outsider("GET", detail), 404)
    for stranger in (facility.client(None), facility.client("forged-token")):
        error_of(stranger("GET", listing), 401)
        error_of(stranger("GET", detail), 401)
    error_of(root("GET", "api/invitations/" + "Z" * 22), 404)


def test_delete_with_running_servers_is_refused(facility):
    facility.stores.groups.add_member("atlas/top", "tom")
    facility.stores.ledger.admit(user="tom", charge=Charge("server", 1))
    root = facility.user("root", admin=True)
    assert "running" in error_of(root("DELETE", "api/groups/atlas/top"), 409)
    assert "subgroup" in error_of(root("DELETE", "api/groups/atlas/higgs"), 409)
    assert facility.stores.groups.get("atlas/top").path == "atlas/top"


def test_usage_json_and_csv(facility):
    ledger = facility.stores.ledger
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    admission = ledger.admit(user="tom", charge=Charge("server", 4, 0, "cpu"), now=start)
    ledger.mark_running(admission.interval_id, at=start)
    ledger.close(admission.interval_id, at=start + timedelta(hours=1))
    root = facility.user("root", admin=True)
    since = (start - timedelta(hours=1)).isoformat()
    usage = root("GET", "api/groups/atlas/-/usage", params={"since": since}).json()
    assert usage["cpu_core_hours"] == pytest.approx(4.0)
    assert usage["intervals"][0]["user"] == "tom"
    csv_text = root(
        "GET", "api/groups/atlas/-/usage", params={"since": since, "format": "csv"}
    ).text
    assert csv_text.splitlines()[0].startswith("id,user,group,kind")
    assert len(csv_text.splitlines()) == 2


def test_default_group_and_facility_admin_grant(facility):
    root = facility.user("root", admin=True)
    root("PUT", "api/groups/atlas/higgs/-/members/tom")
    tom = facility.user("tom")
    assert (
        tom("PATCH", "api/users/tom", json={"default_group": "atlas/higgs"}).json()["default_group"]
        == "atlas/higgs"
    )
    error_of(tom("PATCH", "api/users/hana", json={"default_group": "atlas/higgs"}), 403)
    error_of(tom("PATCH", "api/users/tom", json={"default_group": "atlas"}), 403)
    assert root("PATCH", "api/users/hana", json={"is_facility_admin": True}).json()[
        "is_facility_admin"
    ]
    assert facility.stores.groups.actor("hana").is_facility_admin


def test_prometheus_metrics_for_facility_admins(facility):
    root = facility.user("root", admin=True)
    root("PUT", "api/groups/atlas/-/quota", json={"max_servers": 4, "gpu_hours": 10})
    facility.stores.ledger.admit(user="tom", charge=Charge("server", 2, 1))
    text = root("GET", "metrics").text
    assert 'afhub_group_limit{group="atlas",limit="max_servers"} 4.0' in text
    assert 'afhub_group_used{group="atlas",limit="max_servers"} 1.0' in text
    assert 'afhub_group_limit_used_ratio{group="atlas",limit="max_servers"} 0.25' in text
    assert 'afhub_ledger_open_intervals{kind="server",state="pending"} 1.0' in text
    error_of(facility.user("tom")("GET", "metrics"), 403)
    error_of(facility.client(None)("GET", "metrics"), 401)


BODY_ENDPOINTS = [
    ("POST", "api/groups"),
    ("PATCH", "api/groups/atlas/top"),
    ("PUT", "api/groups/atlas/-/quota"),
    ("PUT", "api/groups/atlas/top/-/members/tom"),
    ("POST", "api/groups/atlas/-/invitations"),
    ("POST", "api/invitations/redeem"),
    ("PATCH", "api/users/root"),
    ("POST", "api/resources"),
    ("PUT", "api/resources/x"),
    ("POST", "api/providers"),
    ("PUT", "api/providers/x"),
    ("PUT", "api/registry"),
]


@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS)
def test_every_body_goes_through_one_parser_with_limits(facility, method, path):
    """Issue 11, finding 5: deeply nested JSON (a RecursionError in the decoder) and
    NaN are a 400 with a message on every endpoint that reads a body, never a 500."""
    root = facility.user("root", admin=True)
    deep = '{"path": ' + "[" * 20000 + "]" * 20000 + "}"
    assert "nests arrays and objects 20001 deep; the limit is 32" in error_of(
        root(method, path, data=deep), 400
    )
    assert "NaN and Infinity are not JSON" in error_of(
        root(method, path, data='{"gpu_hours": NaN, "name": NaN}'), 400
    )
    limit = 1024 * 1024 if path == "api/registry" else 64 * 1024
    assert "over the limit" in error_of(root(method, path, data="[" * (limit + 1)), 413)
    assert "not valid JSON" in error_of(root(method, path, data=b'{"a": "\xff"}'), 400)
