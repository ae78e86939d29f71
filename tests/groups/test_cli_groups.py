"""``afhub groups|quota|invite|usage`` against a facility's database (as ``afhub up``
leaves it), through the command's entry point ``afhub.cli.main`` (tests/cli runs the
installed command in a subprocess; here the process start would only add seconds)."""

import csv
import io
import os
from datetime import UTC, datetime, timedelta

import pytest

from afhub.cli import main
from afhub.quotas.limits import Charge
from afhub.stores.facade import Stores


@pytest.fixture
def afhub(tmp_path, monkeypatch, capsys):
    """``afhub ARGV`` -> (exit status, stdout, stderr), in a facility home of its own."""
    url = f"sqlite:///{tmp_path / 'afhub.sqlite'}"
    Stores.open(url).close()  # the facility's database, as `afhub up` creates it
    for name in list(os.environ):
        if name.startswith("AFHUB_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AFHUB_HOME", str(tmp_path))

    def run(*argv):
        status = main(list(argv))
        out, err = capsys.readouterr()
        return status, out, err

    run.url = url
    return run


def known_users(url: str, *names: str) -> None:
    """Users who have logged in (the hub's login hook records them)."""
    stores = Stores.open(url)
    for name in names:
        stores.groups.ensure_user(name)
    stores.close()


def test_groups_quota_invite_round_trip(afhub):
    # the README's first command, as written, says what to do; --parents makes the chain
    status, _, err = afhub("groups", "create", "atlas/higgs/students")
    assert status == 2
    assert "parent group 'atlas/higgs' does not exist" in err
    assert "--parents" in err
    status, out, _ = afhub("groups", "create", "--parents", "atlas/higgs/students", "cms")
    assert status == 0
    assert out.splitlines() == [
        "created group atlas",
        "created group atlas/higgs",
        "created group atlas/higgs/students",
        "created group cms",
    ]
    assert afhub("groups", "list")[1].splitlines() == [
        "atlas",
        "  atlas/higgs",
        "    atlas/higgs/students",
        "cms",
    ]
    # members must exist; --invite is the explicit way for someone who never logged in
    status, _, err = afhub("groups", "add-member", "atlas/higgs", "bob")
    assert status == 2
    assert "no user 'bob'" in err
    assert "--invite" in err
    assert afhub("groups", "members", "atlas/higgs")[1] == ""
    status, out, _ = afhub("groups", "add-member", "atlas/higgs", "bob", "--invite")
    assert status == 0
    assert "services/afhub/join/" in out
    assert "send the link to bob" in out
    known_users(afhub.url, "hana")
    assert afhub("groups", "add-member", "atlas/higgs", "hana", "--role", "admin")[0] == 0
    assert afhub("groups", "members", "atlas/higgs")[1] == "hana\tadmin\tmanual\n"
    # quotas: whole numbers say so, 'none' removes a limit, a small budget stays visible
    status, _, err = afhub("quota", "set", "atlas/higgs/students", "--max-servers", "-1")
    assert status == 2
    assert "max_servers must be a whole number >= 0 (got -1)" in err
    status, out, _ = afhub(
        "quota", "set", "atlas/higgs/students", "--gpu-hours", "0.001", "--max-servers", "3"
    )
    assert status == 0
    assert "gpu_hours=0.001" in out
    assert "max_servers=3" in out
    status, out, _ = afhub("quota", "set", "atlas/higgs/students", "--max-servers", "none")
    assert "max_servers=-" in out
    status, out, _ = afhub("quota", "show", "atlas/higgs/students")
    assert "0.001" in out
    assert "gpu_hours" in out
    # invitations
    status, out, _ = afhub(
        "invite", "create", "atlas/higgs/students", "--email", "sam@example.edu", "--expires", "2d"
    )
    assert status == 0
    token = out.split("token: ")[1].split()[0]
    assert f"services/afhub/join/{token}" in out
    stores = Stores.open(afhub.url)
    stores.invitations.redeem(token, user="sam", email="sam@example.edu")
    stores.close()
    status, out, _ = afhub("invite", "list", "atlas")
    used = next(line for line in out.splitlines() if "\tused\t" in line)
    assert used.endswith("\tsam"), out  # who joined by it
    invitation_id = used.split("\t")[0]
    assert len(invitation_id) == 22, out  # random, not 1, 2, ...
    assert invitation_id.isalnum(), out
    assert afhub("invite", "revoke", invitation_id)[0] == 0
    assert afhub("groups", "remove-member", "atlas/higgs", "hana")[0] == 0
    assert afhub("groups", "delete", "atlas/higgs", "--recursive")[0] == 0
    assert afhub("groups", "list")[1] == "atlas\ncms\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("groups", "create", "atlas/../x"), "'..'"),
        (("groups", "create", "atlas"), "already exists"),
        (("quota", "set", "atlas", "--max-gpus", "many"), "must be a number"),
        (("quota", "set", "atlas"), "give at least one limit"),
        (("invite", "revoke", "99"), "does not exist"),
    ],
)
def test_bad_input_exits_2_with_a_message(afhub, argv, message):
    afhub("groups", "create", "atlas")
    status, _out, err = afhub(*argv)
    assert status == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_usage_table_and_csv(afhub):
    afhub("groups", "create", "atlas", "atlas/higgs")
    known_users(afhub.url, "sam")
    afhub("groups", "add-member", "atlas/higgs", "sam")
    stores = Stores.open(afhub.url)
    start = datetime(2026, 11, 2, 10, tzinfo=UTC)
    admission = stores.ledger.admit(user="sam", charge=Charge("server", 2, 1, "gpu"), now=start)
    stores.ledger.mark_running(admission.interval_id, at=start)
    stores.ledger.close(admission.interval_id, at=start + timedelta(hours=3))
    stores.close()
    status, out, _ = afhub("usage", "--group", "atlas", "--since", "2026-11-01")
    assert status == 0
    assert "6 CPU core-hours, 3 GPU-hours, 1 interval(s)" in out
    # a window that cuts the interval charges only the overlap
    status, out, _ = afhub(
        "usage", "--group", "atlas", "--since", "2026-11-02T12:00", "--until", "2026-11-03", "--csv"
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1
    assert (rows[0]["user"], rows[0]["group"], rows[0]["gpu_hours"]) == (
        "sam",
        "atlas/higgs",
        "1.0000",
    )
