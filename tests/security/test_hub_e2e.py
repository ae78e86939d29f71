"""Issue 11, the hub side, against one real local facility (hub, proxy, facility API) whose
``$AFHUB_HOME`` was made 0755 beforehand: files on disk (finding 7), charging a group that
may not pay (finding 3), bad input that used to be a 500 (finding 5) and invitation ids
(finding 6), each as an outsider or an ordinary user would try it over HTTP."""

from __future__ import annotations

import html
import os
import stat
from urllib.parse import urljoin

import pytest
import requests

from afhub.stores.facade import Stores
from tests.facility import Facility

pytestmark = [pytest.mark.facility, pytest.mark.slow]

PROVIDER = {"name": "atlas-lab", "institution": "ATLAS Lab"}
GPU = {
    "name": "atlas-a100",
    "provider": "atlas-lab",
    "site": "lab",
    "kind": "gpu",
    "accelerator": "NVIDIA A100 80GB",
    "count_per_node": 2,
    "cpu_per_node": 2,
    "memory_per_node": "4Gi",
    "extended_resource": "nvidia.com/gpu",
    "image": "ghcr.io/afhub/notebook-gpu:2026.11",
    "allowed_groups": ["atlas"],
}


@pytest.fixture(scope="module")
def fac(tmp_path_factory):
    home = tmp_path_factory.mktemp("security-hub") / "home"
    home.mkdir()
    home.chmod(0o755)  # made beforehand, the way mkdir -p leaves it
    (home / "afhub.yaml").write_text("{}\n")
    (home / "afhub.yaml").chmod(0o644)
    facility = Facility(home)
    facility.start(timeout=240)
    yield facility
    facility.stop()
    facility.cleanup_orphans()


@pytest.fixture(scope="module")
def admin(fac):
    token = fac.login("admin", fac.admin_password).new_token("security e2e")
    base = urljoin(fac.url, "services/facility/api/")

    def call(method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(
            method, base + path, headers={"Authorization": f"token {token}"}, timeout=30, **kwargs
        )

    return call


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def message(response: requests.Response) -> str:
    body = response.json()
    assert "Traceback" not in response.text
    return body.get("message") or body.get("error")


def test_home_made_0755_is_tightened_and_every_state_file_is_0600(fac):
    home = fac.home
    assert mode(home) == 0o700
    for folder in ("logs", "homes"):
        assert mode(home / folder) == 0o700, folder
    expected = [
        "afhub.sqlite",  # facility database
        "jupyterhub.sqlite",  # hub database
        "jupyterhub_cookie_secret",
        "admin-password",
        "afhub.yaml",  # was 0644
    ]
    for name in expected:
        assert (home / name).exists(), name
        assert mode(home / name) == 0o600, (name, oct(mode(home / name)))
    found = [
        p
        for p in [*home.iterdir(), *(home / "logs").iterdir()]
        if p.is_file() and p.name != "facility-output.log"  # the test's own capture
    ]
    loose = {str(p.relative_to(home)): oct(mode(p)) for p in found if mode(p) & 0o077}
    assert loose == {}, loose
    assert [p for p in (home / "logs").iterdir() if p.suffix == ".log"], "no log files"


def test_a_gpu_open_to_atlas_cannot_be_charged_to_users(fac, admin):
    """Finding 3: the attack from the issue, through the REST API and the spawn form."""
    for path in ("atlas", "atlas/higgs", "atlas/higgs/students"):
        assert admin("POST", "groups", json={"path": path}).status_code == 201
    r = admin("PUT", "groups/atlas/-/quota", json={"max_gpus": 0, "gpu_hours": 0})
    assert r.status_code == 200, r.text
    assert admin("POST", "providers", json=PROVIDER).status_code == 201
    assert admin("POST", "resources", json=GPU).status_code == 201, "resource"
    # mallory logs in first (joins the default group, users), then is made a student
    mallory = fac.login("mallory", fac.add_user("mallory"))
    r = admin("PUT", "groups/atlas/higgs/students/-/members/mallory", json={})
    assert r.status_code == 200, r.text
    spawn = f"users/{mallory.username}/server"
    gpu = {"profile": "atlas-a100", "accelerators": "1"}

    r = mallory.api("POST", spawn, json={**gpu, "charge_to": "users"})
    assert r.status_code == 403, r.text
    said = message(r)
    assert "open to 'atlas'" in said, said
    assert "not to 'users'" in said, said
    assert "your groups that may pay: atlas/higgs/students" in said, said
    # the same through the spawn form: it does not offer the GPU at all (the only group
    # of mallory's that may pay for it, through atlas, has no GPU left: atlas allows 0),
    # and a form posted by hand with users as the payer is refused
    form = mallory.get(urljoin(fac.hub_url, "spawn"), timeout=30).text
    assert "charge_to" in form, "the form offers a choice of groups"
    assert "atlas-a100" not in form
    posted = mallory.post(
        urljoin(fac.hub_url, "spawn/mallory"),
        data={"profile": "atlas-a100", "charge_to": "users", "_xsrf": mallory.xsrf},
        timeout=60,
    )
    assert "can only be charged to" in html.unescape(posted.text), posted.text[-2000:]
    # charging a group that may pay meets atlas's quota: the bypass is closed
    for options in ({**gpu, "charge_to": "atlas/higgs/students"}, gpu):
        r = mallory.api("POST", spawn, json=options)
        assert r.status_code == 403, r.text
        assert "atlas" in message(r), message(r)
    # a charge_to that cannot name a group is a 400 that says why (it was a 500)
    for bad in ("atlas/../users", "../../etc", "atlas//higgs"):
        r = mallory.api("POST", spawn, json={**gpu, "charge_to": bad})
        assert r.status_code == 400, (bad, r.status_code, r.text)
        assert "charge_to must be a group path" in message(r)
    assert mallory.api("GET", f"users/{mallory.username}").json()["servers"] == {}
    stores = Stores.open(f"sqlite:///{fac.home / 'afhub.sqlite'}", migrate=False)
    try:
        assert stores.ledger.open_intervals() == []
    finally:
        stores.close()


def test_deep_json_to_quota_and_registry_is_a_400(admin):
    """Finding 5: nested JSON was a RecursionError and a 500."""
    deep = '{"max_gpus": ' + "[" * 20000 + "]" * 20000 + "}"
    for method, path in (
        ("PUT", "groups/atlas/-/quota"),
        ("POST", "resources"),
        ("PUT", "registry"),
        ("POST", "groups"),
    ):
        r = admin(method, path, data=deep)
        assert r.status_code == 400, (path, r.status_code, r.text[:200])
        assert "the limit is 32" in message(r)


def test_invitation_ids_are_random_and_refusals_name_no_group(fac, admin):
    """Finding 6: ids said how many invitations exist; a 403 named the group."""
    ids = [admin("POST", "groups/atlas/-/invitations", json={}).json()["id"] for _ in range(2)]
    assert all(len(i) == 22 and i.isalnum() for i in ids)
    assert ids[0] != ids[1]
    outsider = fac.login("eve", fac.add_user("eve"))
    token = outsider.new_token("eve")
    base = urljoin(fac.url, "services/facility/api/")
    headers = {"Authorization": f"token {token}"}
    theirs = requests.delete(f"{base}invitations/{ids[0]}", headers=headers, timeout=30)
    missing = requests.delete(f"{base}invitations/{'Z' * 22}", headers=headers, timeout=30)
    assert theirs.status_code == missing.status_code == 404
    assert message(theirs).replace(ids[0], "ID") == message(missing).replace("Z" * 22, "ID")
    assert "atlas" not in theirs.text
    # who joined by an invitation: the same 404 to an outsider, the list to the admin
    peek = requests.get(f"{base}invitations/{ids[0]}", headers=headers, timeout=30)
    assert peek.status_code == 404
    assert "joined" not in peek.text
    assert admin("GET", f"invitations/{ids[0]}").json()["joined"] == []
    listed = admin("GET", "groups/atlas/-/invitations").json()["invitations"]
    assert {i["status"] for i in listed} == {"active"}
