"""The registry store, on SQLite and on PostgreSQL (when AFHUB_TEST_POSTGRES_URL is set)."""

# the store fixtures of tests/stores (SQLite and PostgreSQL databases) are reused here
# ruff: noqa: F811

from __future__ import annotations

import copy
import threading
from pathlib import Path

import pytest
import yaml

from afhub.quotas.limits import Charge, ChargeKind
from afhub.registry.model import Registry, parse_registry
from afhub.stores.errors import AlreadyExists, NotFound, StoreError
from afhub.stores.facade import Stores
from afhub.stores.registry import ManagedElsewhere, RegistryBusy, RegistryInvalid
from tests.stores.conftest import _postgres_url, _sqlite_template, db_url, stores  # noqa: F401

EXAMPLE = yaml.safe_load((Path(__file__).with_name("example.yaml")).read_text())


def provider(name="uchicago"):
    return {"name": name, "institution": "University of Chicago", "contacts": ["af@x.example"]}


def gpu(name="a100", **changes):
    entry = {
        "name": name,
        "provider": "uchicago",
        "site": "UChicago AF",
        "kind": "gpu",
        "accelerator": "NVIDIA A100 80GB",
        "count_per_node": 4,
        "node_count": 2,
        "cpu_per_node": 64,
        "memory_per_node": "512Gi",
        "extended_resource": "nvidia.com/gpu",
        "image": "ghcr.io/afhub/notebook-gpu:2026.11",
        "allowed_groups": ["atlas/higgs"],
    }
    entry.update(changes)
    return entry


def run_server_on(stores, resource, user="hana"):
    if not stores.groups.list():
        stores.groups.create("atlas")
    stores.groups.add_member("atlas", user)
    charge = Charge(kind=ChargeKind.SERVER, cpu_cores=1, gpus=1, resource=resource)
    return stores.ledger.admit(user=user, charge=charge, group="atlas")


def test_empty_registry(stores):
    assert stores.registry.revision() == 0
    registry = stores.registry.load()
    assert isinstance(registry, Registry)
    assert not registry.resources
    assert stores.registry.document() == {"providers": [], "resources": []}
    assert stores.registry.get_resource("a100") is None


def test_add_show_remove_and_revision(stores):
    store = stores.registry
    store.add_provider(provider())
    store.add_resource(gpu())
    assert store.revision() == 2
    assert store.get_resource("a100") == gpu()
    registry = store.load()
    assert registry.resources["a100"].count_per_node == 4
    assert registry.allowed({"atlas/higgs/students"})[0].name == "a100"
    assert store.resource_records()[0]["source"] == "api"
    store.remove_resource("a100")
    assert store.get_resource("a100") is None
    assert store.revision() == 3
    with pytest.raises(NotFound, match="no resource named 'a100'"):
        store.remove_resource("a100")


def test_bad_entries_are_refused_with_the_entry_and_field(stores):
    store = stores.registry
    store.add_provider(provider())
    cases = [
        (gpu(count_per_node=-1), "resource 'a100': field 'count_per_node' must not be negative"),
        (gpu(kind="tpu"), "resource 'a100': field 'kind' is 'tpu'"),
        (gpu(colour="red"), "resource 'a100': unknown fields ['colour']"),
        (gpu(provider="nobody"), "resource 'a100': field 'provider' is 'nobody'"),
        (gpu(cpu_per_node=float("nan")), "resource 'a100'"),
        (gpu(name="Bad Name"), "field 'name'"),
        ({"kind": "gpu"}, "field 'name' is required"),
        (["not", "a", "mapping"], "must be a mapping"),
    ]
    for entry, message in cases:
        with pytest.raises(RegistryInvalid) as caught:
            store.add_resource(entry)
        assert message in str(caught.value), str(caught.value)
        assert caught.value.status == 400
    assert store.revision() == 1
    assert store.document()["resources"] == []
    with pytest.raises(RegistryInvalid, match="field 'institution' is required"):
        store.add_provider({"name": "fnal"})


def test_duplicate_add_needs_replace(stores):
    store = stores.registry
    store.add_provider(provider())
    store.add_resource(gpu())
    with pytest.raises(AlreadyExists, match="already exists") as caught:
        store.add_resource(gpu(node_count=3))
    assert caught.value.status == 409
    store.add_resource(gpu(node_count=3), replace=True)
    assert store.load().resources["a100"].node_count == 3


def test_load_is_cached_until_a_write(stores, db_url):
    store = stores.registry
    store.add_provider(provider())
    store.add_resource(gpu())
    first = store.load()
    assert store.load() is first  # unchanged: the cached object
    # a write through another connection (the CLI, another hub process) is seen
    other = Stores.open(db_url, migrate=False)
    try:
        other.registry.add_resource(gpu(node_count=5), replace=True)
    finally:
        other.close()
    second = store.load()
    assert second is not first
    assert second.resources["a100"].node_count == 5
    assert store.load() is second
    # a refused write changes nothing
    with pytest.raises(RegistryInvalid):
        store.add_resource(gpu(node_count=-5), replace=True)
    assert store.load() is second


def test_removing_a_resource_with_running_servers_is_refused(stores):
    store = stores.registry
    store.add_provider(provider())
    store.add_resource(gpu())
    admission = run_server_on(stores, "a100")
    run_server_on(stores, "a100", user="tom")
    with pytest.raises(RegistryBusy) as caught:
        store.remove_resource("a100")
    assert caught.value.status == 409
    assert "2 server(s) still run on it; stop them" in str(caught.value)
    with pytest.raises(RegistryBusy, match="field 'kind' cannot change"):
        store.add_resource(gpu(kind="fpga", extended_resource="xilinx.com/fpga-u250"), replace=True)
    with pytest.raises(RegistryBusy, match="still run on it"):
        store.apply({"providers": [provider()]}, source="api")
    # growing the pool is fine while servers run
    store.add_resource(gpu(node_count=4), replace=True)
    assert store.get_resource("a100") is not None
    stores.ledger.fail(admission.interval_id)
    stores.ledger.close(stores.ledger.find_open(kind="server", user="tom").id)
    store.remove_resource("a100")
    assert store.get_resource("a100") is None


def test_provider_in_use_cannot_be_removed(stores):
    store = stores.registry
    store.add_provider(provider())
    store.add_resource(gpu())
    with pytest.raises(RegistryBusy, match="still provides 1 resource"):
        store.remove_provider("uchicago")
    store.remove_resource("a100")
    store.remove_provider("uchicago")
    assert store.document() == {"providers": [], "resources": []}


def test_apply_replaces_only_its_own_source(stores):
    store = stores.registry
    summary = store.apply(EXAMPLE, source="file")
    file_resources = [r["name"] for r in EXAMPLE["resources"]]
    assert sorted(summary["added"]) == sorted(
        [f"provider {p['name']}" for p in EXAMPLE["providers"]]
        + [f"resource {n}" for n in file_resources]
    )
    assert list(store.load().resources) == file_resources
    assert store.load() == parse_registry(store.document())  # per-entry parsing: the same
    # an API entry next to the file's
    store.add_resource(gpu(name="h100"))
    # the same file again: nothing changes, the revision stays
    revision = store.revision()
    assert store.apply(EXAMPLE, source="file")["added"] == []
    assert store.revision() == revision
    # a smaller file removes its own dropped entries, never the API's
    smaller = copy.deepcopy(EXAMPLE)
    smaller["resources"] = smaller["resources"][:1]
    summary = store.apply(smaller, source="file")
    assert sorted(summary["removed"]) == sorted(f"resource {n}" for n in file_resources[1:])
    assert list(store.load().resources) == [file_resources[0], "h100"]
    assert store.document(source="api")["resources"] == [gpu(name="h100")]
    # the API may not change or remove a file entry, nor the file an API entry
    with pytest.raises(ManagedElsewhere, match="registry file"):
        store.add_resource(store.get_resource(file_resources[0]), replace=True)
    with pytest.raises(ManagedElsewhere, match="registry file"):
        store.remove_resource(file_resources[0])
    clash = copy.deepcopy(smaller)
    clash["resources"].append(gpu(name="h100", node_count=9))
    with pytest.raises(ManagedElsewhere, match="resource 'h100' comes from the facility API"):
        store.apply(clash, source="file")
    # the whole document read back applies unchanged (identical entries of the other source)
    whole = store.document()
    assert store.apply(whole, source="api")["removed"] == []
    assert store.document() == whole


def test_apply_is_all_or_nothing(stores):
    store = stores.registry
    store.apply(EXAMPLE, source="file")
    before = store.document()
    revision = store.revision()
    bad = copy.deepcopy(EXAMPLE)
    bad["resources"][0] = dict(bad["resources"][0], name="cpu-renamed")
    bad["resources"][-1]["count_per_node"] = -2
    with pytest.raises(RegistryInvalid, match="must not be negative"):
        store.apply(bad, source="file")
    assert store.document() == before
    assert store.revision() == revision
    for document, message in [
        ({"resources": "x"}, "must be a list"),
        ({"providers": [], "extra": 1}, "unknown top-level keys ['extra']"),
        ("just text", "must be a mapping"),
        ({"providers": [provider(), provider()]}, "provider 'uchicago': duplicate name"),
    ]:
        with pytest.raises(RegistryInvalid, match=message.replace("[", r"\[").replace("]", r"\]")):
            store.apply(document, source="file")
    assert store.document() == before


def test_concurrent_writers_lose_nothing(stores, db_url):
    stores.registry.add_provider(provider())
    errors = []

    def add(i):
        opened = Stores.open(db_url, migrate=False)
        try:
            opened.registry.add_resource(gpu(name=f"gpu-{i}"))
        except StoreError as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)
        finally:
            opened.close()

    threads = [threading.Thread(target=add, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(stores.registry.load().resources) == sorted(f"gpu-{i}" for i in range(6))
    assert stores.registry.revision() == 7


def test_revision_check_survives_a_lost_connection(stores):
    store = stores.registry
    store.add_provider(provider())
    assert store.revision() == 1
    if store._revision_conn is None:
        pytest.skip("SQLite checks the revision on pooled connections")
    store._revision_conn.close()  # as when the PostgreSQL server restarted
    store.add_provider(provider("fnal"))
    assert store.revision() == 2
    assert sorted(store.load().providers) == ["fnal", "uchicago"]
