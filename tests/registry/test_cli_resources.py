"""``afhub resources`` (the operator's CLI on the hub host) and the registry file
(``AFHUB_REGISTRY``) applied at hub start."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from traitlets.config import Config

from afhub.cli import main
from afhub.hubconfig import configure
from afhub.quotas.limits import Charge, ChargeKind
from afhub.stores.facade import Stores

EXAMPLE = Path(__file__).with_name("example.yaml")
GPU = {
    "name": "h100",
    "provider": "uchicago",
    "site": "UChicago AF",
    "kind": "gpu",
    "accelerator": "NVIDIA H100",
    "count_per_node": 8,
    "cpu_per_node": 96,
    "memory_per_node": "1Ti",
    "extended_resource": "nvidia.com/gpu",
    "image": "ghcr.io/afhub/notebook-gpu:2026.11",
    "allowed_groups": ["atlas/higgs"],
}


@pytest.fixture
def home(tmp_path, monkeypatch):
    for name in ("AFHUB_DB_URL", "AFHUB_REGISTRY", "AFHUB_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AFHUB_HOME", str(tmp_path / "home"))
    # a facility's database, as `afhub up` leaves it (the CLI never creates one)
    (tmp_path / "home").mkdir()
    Stores.open(f"sqlite:///{tmp_path / 'home' / 'afhub.sqlite'}").close()
    return tmp_path


def afhub(capsys, *argv):
    code = main(["resources", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def opened(home):
    return Stores.open(f"sqlite:///{home / 'home' / 'afhub.sqlite'}", migrate=False)


def test_operator_manages_the_registry(home, capsys):
    assert afhub(capsys, "list")[1].startswith("no resources")
    code, out, _ = afhub(capsys, "apply", str(EXAMPLE))
    assert code == 0
    assert "added resource a100-80gb" in out
    assert "added provider fnal" in out
    code, out, _ = afhub(capsys, "list", "--kind", "gpu")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "KIND", "ACCELERATOR"]
    assert [line.split()[0] for line in lines[1:]] == ["a100-80gb", "a100-mig-1g10gb"]
    assert "atlas,cms/gpu-users" in lines[1]
    # add from a file and from --json, show, replace, remove
    entry_file = home / "h100.yaml"
    entry_file.write_text(yaml.safe_dump(GPU))
    assert afhub(capsys, "add", str(entry_file))[:2] == (0, "added resource h100\n")
    code, out, _ = afhub(capsys, "show", "h100")
    assert code == 0
    assert yaml.safe_load(out) == GPU
    assert "# source: api" in out
    bigger = json.dumps(dict(GPU, node_count=4))
    assert afhub(capsys, "add", "--json", bigger)[0] == 2  # exists: needs --replace
    assert afhub(capsys, "add", "--json", bigger, "--replace")[0] == 0
    assert afhub(capsys, "remove", "h100")[:2] == (0, "removed resource h100\n")
    code, out, _ = afhub(capsys, "providers", "list")
    assert code == 0
    assert "University of Chicago" in out
    exported = yaml.safe_load(afhub(capsys, "export")[1])
    assert exported == yaml.safe_load(EXAMPLE.read_text())
    stores = opened(home)
    try:
        assert "h100" not in stores.registry.load().resources
        assert len(stores.registry.load().resources) == 4
    finally:
        stores.close()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["add", "--json", json.dumps(dict(GPU, count_per_node=-1))], "must not be negative"),
        (["add", "--json", json.dumps(dict(GPU, kind="tpu"))], "field 'kind' is 'tpu'"),
        (["add", "--json", json.dumps(dict(GPU, colour="red"))], "unknown fields ['colour']"),
        (["add", "--json", "{not json"], "--json is not valid JSON"),
        (["add", "--json", "[1, 2]"], "must be a mapping"),
        (["add"], "give a resource entry"),
        (["add", "/no/such/file.yaml"], "cannot read /no/such/file.yaml"),
        (["apply", "BADYAML"], "is not valid YAML at line"),
        (["add", "EXAMPLE"], "use 'afhub resources apply FILE'"),
        (["show", "ghost"], "no resource named 'ghost'"),
        (["remove", "ghost"], "no resource named 'ghost'"),
        (["providers", "remove", "uchicago"], "still provides"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(home, capsys, argv, message):
    assert afhub(capsys, "apply", str(EXAMPLE))[0] == 0
    bad_yaml = home / "bad.yaml"
    bad_yaml.write_text("resources: [\n  - name: x\n   kind: gpu\n")
    argv = [{"BADYAML": str(bad_yaml), "EXAMPLE": str(EXAMPLE)}.get(arg, arg) for arg in argv]
    code, out, err = afhub(capsys, *argv)
    assert code == 2, (out, err)
    assert message in err
    assert err.startswith("afhub: ")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_remove_refused_while_a_server_runs(home, capsys):
    afhub(capsys, "apply", str(EXAMPLE))
    stores = opened(home)
    try:
        stores.groups.create("atlas")
        stores.groups.add_member("atlas", "hana")
        charge = Charge(kind=ChargeKind.SERVER, cpu_cores=16, gpus=1, resource="a100-80gb")
        stores.ledger.admit(user="hana", charge=charge, group="atlas")
    finally:
        stores.close()
    code, _, err = afhub(capsys, "remove", "a100-80gb")
    assert code == 2
    assert "1 server(s) still run on it; stop them" in err
    assert "a100-80gb" in afhub(capsys, "list")[1]


@pytest.mark.usefixtures("home")
def test_the_installed_command_exits_2_on_bad_input():
    result = subprocess.run(
        [sys.executable, "-m", "afhub", "resources", "add", "--json", '{"name": "x"}'],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result
    assert (
        result.stderr.strip() == "afhub: resource 'x': field 'provider' is None, not one of "
        "the declared providers"
    )


# --- the registry file at hub start ------------------------------------------------------------


def test_registry_file_is_applied_at_hub_start(home, monkeypatch, capsys):
    registry_file = home / "registry.yaml"
    document = yaml.safe_load(EXAMPLE.read_text())
    registry_file.write_text(yaml.safe_dump(document))
    monkeypatch.setenv("AFHUB_REGISTRY", str(registry_file))
    configure(Config())
    stores = opened(home)
    try:
        assert len(stores.registry.load().resources) == 4
        assert {r["source"] for r in stores.registry.resource_records()} == {"file"}
        stores.registry.add_resource(GPU)  # an API entry next to the file's
    finally:
        stores.close()
    # the next start with a smaller file: the file's dropped entry goes, the API's stays
    smaller = copy.deepcopy(document)
    smaller["resources"] = [r for r in smaller["resources"] if r["name"] != "alveo-u250"]
    registry_file.write_text(yaml.safe_dump(smaller))
    configure(Config())
    stores = opened(home)
    try:
        assert list(stores.registry.load().resources) == [
            "cpu-standard",
            "a100-80gb",
            "a100-mig-1g10gb",
            "h100",
        ]
    finally:
        stores.close()
    # the operator's CLI may not remove a file entry
    code, _, err = afhub(capsys, "remove", "cpu-standard")
    assert code == 2
    assert "registry file" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "cannot be read: No such file or directory"),
        ("resources: [\n  - name: x\n   kind: gpu\n", "is not valid YAML at line"),
        ("COUNT", "resource 'a100-80gb': field 'count_per_node' must not be negative (got -1)"),
        ("KIND", "resource 'a100-80gb': field 'kind' is 'tpu'"),
        ("- just\n- a list\n", "registry must be a mapping"),
    ],
)
def test_a_bad_registry_file_stops_the_start_with_one_line(
    home, monkeypatch, capsys, text, message
):
    registry_file = home / "registry.yaml"
    document = yaml.safe_load(EXAMPLE.read_text())
    if text == "COUNT":
        document["resources"][1]["count_per_node"] = -1
        text = yaml.safe_dump(document)
    elif text == "KIND":
        document["resources"][1]["kind"] = "tpu"
        text = yaml.safe_dump(document)
    if text is not None:
        registry_file.write_text(text)
    monkeypatch.setenv("AFHUB_REGISTRY", str(registry_file))
    with pytest.raises(SystemExit) as stopped:
        configure(Config())
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"afhub: registry file {registry_file} (AFHUB_REGISTRY)")
    assert message in err
    stores = opened(home)
    try:
        assert stores.registry.document() == {"providers": [], "resources": []}
    finally:
        stores.close()
