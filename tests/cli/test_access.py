"""Reaching a facility from a laptop: any of its addresses names it, and the token ``afhub
login`` keeps is private and found again by ``FitClient`` (no facility needed here; the
login against a real hub is in tests/fitting_service/test_fitting_clients.py)."""

from __future__ import annotations

import stat

import pytest

from afhub.client import FitClient, FitError
from afhub.client.access import (
    AccessError,
    Credential,
    facility_root,
    save_credential,
    service_url,
    stored_credential,
)


@pytest.mark.parametrize(
    ("address", "root"),
    [
        ("http://127.0.0.1:8000/hub/login", "http://127.0.0.1:8000/"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000/"),
        ("http://127.0.0.1:8000/services/fitting/", "http://127.0.0.1:8000/"),
        ("http://127.0.0.1:8000/services/fitting/api/jobs", "http://127.0.0.1:8000/"),
        ("https://af.example.edu/af/hub/token", "https://af.example.edu/af/"),
        ("https://af.example.edu/af/user/ann/lab", "https://af.example.edu/af/"),
    ],
)
def test_any_address_names_the_facility(address, root):
    assert facility_root(address) == root
    assert service_url(address, "fitting") == root + "services/fitting/"


def test_an_address_inside_a_service_keeps_its_host():
    inside = "http://proxy-public/services/fitting/api/"
    assert service_url(inside, "fitting") == "http://proxy-public/services/fitting/"


@pytest.mark.parametrize("address", ["127.0.0.1:8000", "ftp://x/", ""])
def test_what_is_not_an_address_says_what_to_give(address):
    with pytest.raises(AccessError, match="not a facility address: give the address"):
        facility_root(address)


def test_the_kept_token_is_private_and_found_by_fitclient(tmp_path, monkeypatch):
    for name in ("AFHUB_FITTING_URL", "JUPYTERHUB_PUBLIC_HUB_URL", "AFHUB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    monkeypatch.setenv("AFHUB_CREDENTIALS", str(tmp_path / "afhub" / "credentials.json"))
    with pytest.raises(FitError, match="afhub login URL"):
        FitClient()
    save_credential(Credential("http://a.example/", "ann", "token-a"))
    path = save_credential(Credential("http://b.example/af/", "bob", "token-b"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stored_credential("http://a.example/hub/login").token == "token-a"
    assert stored_credential().user == "bob"  # the last login is the current facility
    fits = FitClient()
    assert (fits.url, fits.token) == ("http://b.example/af/services/fitting/", "token-b")
    fits = FitClient("http://a.example/services/fitting/")
    assert fits.token == "token-a"
    with pytest.raises(FitError, match="no API token"):
        FitClient("http://c.example/")


def test_afhub_fit_without_an_address_or_token_says_what_to_run(tmp_path, monkeypatch, capsys):
    from afhub.cli import main

    for name in ("AFHUB_FITTING_URL", "JUPYTERHUB_PUBLIC_HUB_URL", "AFHUB_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    monkeypatch.setenv("AFHUB_CREDENTIALS", str(tmp_path / "credentials.json"))
    assert main(["fit", "status", "job"]) == 2
    assert capsys.readouterr().err == (
        "afhub fit: no facility address: give --url (the address `afhub up` printed), or run "
        "`afhub login URL` once\n"
    )
    assert main(["fit", "status", "job", "--url", "http://127.0.0.1:8000/hub/login"]) == 2
    assert capsys.readouterr().err == (
        "afhub fit: no token for http://127.0.0.1:8000/: run `afhub login "
        "http://127.0.0.1:8000/` or give --token\n"
    )
