"""Issue 11, finding 7: a CILogon user with a prefixed username (``github:octocat``) is
the same person to the gateway as to the rest of the facility. Upstream's authenticator
turned any name with a colon into ``user:github:octocat``, so the gateway looked the user
up under another name: no groups, no cluster. Against the session facility's real hub and
gateway, with a hub user of such a name and a token the hub made for them."""

from __future__ import annotations

import uuid
from urllib.parse import quote, urljoin

import pytest
import requests

from afhub.stores.facade import Stores

pytestmark = [pytest.mark.facility, pytest.mark.slow]


def test_prefixed_username_is_looked_up_under_its_own_name(facility):
    name = f"github:octo{uuid.uuid4().hex[:6]}"
    admin = facility.login("admin", facility.admin_password)
    r = admin.api("POST", f"users/{quote(name)}")
    assert r.status_code == 201, r.text
    r = admin.api("POST", f"users/{quote(name)}/tokens", json={"note": "prefixed"})
    assert r.status_code in (200, 201), r.text
    token = r.json()["token"]
    stores = Stores.open(f"sqlite:///{facility.home / 'afhub.sqlite'}", migrate=False)
    try:
        stores.groups.add_member("users", name)
    finally:
        stores.close()

    gateway = urljoin(facility.url, "services/dask-gateway/api/v1/")
    auth = {"Authorization": f"jupyterhub {token}"}
    r = requests.get(gateway + "options", headers=auth, timeout=30)
    assert r.status_code == 200, r.text
    charge_to = next(f for f in r.json()["cluster_options"] if f["field"] == "charge_to")
    assert charge_to["spec"]["options"] == ["users"], charge_to
    r = requests.post(gateway + "clusters/", json={"cluster_options": {}}, headers=auth)
    assert r.status_code == 201, r.text
    cluster = r.json()["name"]
    try:
        stores = Stores.open(f"sqlite:///{facility.home / 'afhub.sqlite'}", migrate=False)
        try:
            interval = stores.ledger.find_open(
                kind="dask", user=name, server_name=f"{cluster}/scheduler"
            )
        finally:
            stores.close()
        assert interval is not None
        assert interval.group == "users"
        model = requests.get(gateway + f"clusters/{cluster}", headers=auth, timeout=30).json()
        assert model["name"] == cluster
    finally:
        requests.delete(gateway + f"clusters/{cluster}", headers=auth, timeout=30)
