import argparse
import csv
import io
from datetime import UTC, datetime, timedelta

import pytest

from afhub.cli import register_commands as register
from afhub.quotas.limits import Charge
from afhub.stores.facade import Stores


@pytest.fixture
def afhub(tmp_path, monkeypatch, capsys):
    url = f"sqlite:///{tmp_path / 'afhub.sqlite'}"
    monkeypatch.setenv("AFHUB_DB_URL", url)
    parser = argparse.ArgumentParser(prog="afhub")
    register(parser.add_subparsers(dest="command", required=True))

    def run(*argv):
        args = parser.parse_args(argv)
        status = args.handler(args, None)
        out, err = capsys.readouterr()
        return status, out, err

    run.url = url
    return run


def test_groups_quota_invite_round_trip(afhub):
    assert afhub("groups", "create", "atlas", "atlas/higgs", "atlas/higgs/students")[0] == 0
    status, out, _ = afhub("groups", "list")
    assert out.splitlines() == ["atlas", "  atlas/higgs", "    atlas/higgs/students"]
    assert afhub("groups", "add-member", "atlas/higgs", "hana", "--role", "admin")[0] == 0
    assert afhub("groups", "members", "atlas/higgs")[1] == "hana\tadmin\tmanual\n"
    status, out, _ = afhub(
        "quota", "set", "atlas/higgs/students", "--gpu-hours", "10", "--max-servers", "3"
    )
    assert status == 0
    assert "gpu_hours=10" in out
    assert "max_servers=3" in out
    status, out, _ = afhub("quota", "show", "atlas/higgs/students")
    assert "atlas/higgs/students" in out
    assert "gpu_hours" in out
    status, out, _ = afhub(
        "invite", "create", "atlas/higgs/students", "--email", "sam@example.edu", "--expires", "2d"
    )
    assert status == 0
    token = out.split("token: ")[1].split()[0]
    assert f"services/facility/join/{token}" in out
    stores = Stores.open(afhub.url)
    stores.invitations.redeem(token, user="sam", email="sam@example.edu")
    stores.close()
    status, out, _ = afhub("invite", "list", "atlas")
    assert "\tused\t" in out
    invitation_id = out.split("\t")[0]
    assert len(invitation_id) == 22, out  # random, not 1, 2, ...
    assert invitation_id.isalnum(), out
    assert afhub("invite", "revoke", invitation_id)[0] == 0
    assert afhub("invite", "revoke", "1")[0] != 0
    assert afhub("groups", "remove-member", "atlas/higgs", "hana")[0] == 0
    assert afhub("groups", "delete", "atlas/higgs", "--recursive")[0] == 0
    assert afhub("groups", "list")[1] == "atlas\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("groups", "create", "atlas/../x"), "'..'"),
        (("groups", "create", "atlas"), "already exists"),
        (("groups", "delete", "nope"), "does not exist"),
        (("quota", "set", "atlas", "--gpu-hours", "-5"), "must not be negative"),
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
    assert "Traceback" not in err


def test_usage_table_and_csv(afhub):
    afhub("groups", "create", "atlas", "atlas/higgs")
    afhub("groups", "add-member", "atlas/higgs", "sam")
    stores = Stores.open(afhub.url)
    start = datetime(2026, 11, 2, 10, tzinfo=UTC)
    admission = stores.ledger.admit(user="sam", charge=Charge("server", 2, 1, "gpu"), now=start)
    stores.ledger.mark_running(admission.interval_id, at=start)
    stores.ledger.close(admission.interval_id, at=start + timedelta(hours=3))
    stores.close()
    status, out, _ = afhub("usage", "--group", "atlas", "--since", "2026-11-01")
    assert status == 0
    assert "6.00 CPU core-hours, 3.00 GPU-hours, 1 interval(s)" in out
    status, out, _ = afhub("usage", "--group", "atlas", "--since", "2026-11-01", "--csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1
    assert (rows[0]["user"], rows[0]["group"], rows[0]["gpu_hours"]) == (
        "sam",
        "atlas/higgs",
        "3.0000",
    )
    # a window that cuts the interval charges only the overlap
    status, out, _ = afhub(
        "usage", "--group", "atlas", "--since", "2026-11-02T12:00", "--until", "2026-11-03", "--csv"
    )
    assert next(csv.DictReader(io.StringIO(out)))["gpu_hours"] == "1.0000"
