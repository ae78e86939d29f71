"""The culler service's pieces on real objects: settings → policy and hub configuration,
server kinds read from a real ledger, the arbiter fed server models shaped as the hub's
REST API sends them."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from traitlets import TraitError
from traitlets.config import Config

from afhub.culling import CullPolicy
from afhub.hubconfig import CULLER_SERVICE, build_config
from afhub.quotas.limits import Charge
from afhub.services.culler import (
    CULLER_SCOPES,
    current_kinds,
    make_arbiter,
    policy_from_settings,
    server_activity,
)
from afhub.settings import FacilitySettings, SettingsError, load_settings
from afhub.stores.facade import Stores

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@pytest.fixture
def env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("AFHUB_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AFHUB_HOME", str(tmp_path / "state"))
    return monkeypatch


def iso(seconds_ago: float) -> str:
    """A timestamp as the hub's REST API writes it."""
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def model(user, name="", idle_s=0.0, age_s=7200.0, options=None):
    """A server model as ``GET /hub/api/users`` returns it (the fields the culler reads)."""
    return {
        "name": name,
        "full_name": f"{user}/{name}",
        "last_activity": iso(idle_s),
        "started": iso(age_s),
        "pending": None,
        "ready": True,
        "url": f"/user/{user}/{name}",
        "user_options": options or {},
    }


# -- settings → policy, hub configuration --


@pytest.mark.usefixtures("env")
def test_defaults_cull_gpu_and_fpga_sooner_than_cpu():
    settings = load_settings(Config())
    assert settings.cull_enabled is True
    assert (settings.cull_timeout_cpu, settings.cull_timeout_gpu) == (3600, 1200)
    assert (settings.cull_timeout_fpga, settings.cull_every, settings.cull_max_age) == (
        1200,
        60,
        0,
    )
    policy = policy_from_settings(settings)
    assert policy.timeouts == {"cpu": 3600, "gpu": 1200, "fpga": 1200}
    assert policy.max_age == 0
    assert settings.named_server_limit == 3


def test_culling_settings_from_environment_and_yaml(env):
    env.setenv("AFHUB_CULL_TIMEOUT_GPU", "300")
    env.setenv("AFHUB_CULL_EVERY", "1")
    env.setenv("AFHUB_CULL_MAX_AGE", "86400")
    env.setenv("AFHUB_NAMED_SERVER_LIMIT", "0")
    settings = load_settings(Config({"FacilitySettings": {"cull_timeout_fpga": 120}}))
    policy = policy_from_settings(settings)
    assert policy.timeouts == {"cpu": 3600, "gpu": 300, "fpga": 120}
    assert policy.max_age == 86400
    assert settings.cull_every == 1
    assert settings.named_server_limit == 0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AFHUB_CULL_TIMEOUT_GPU", "soon", "AFHUB_CULL_TIMEOUT_GPU='soon' is not a whole number"),
        ("AFHUB_CULL_TIMEOUT_CPU", "-1", "AFHUB_CULL_TIMEOUT_CPU=-1 must be at least 0"),
        ("AFHUB_CULL_EVERY", "0", "AFHUB_CULL_EVERY=0 must be at least 1"),
        ("AFHUB_NAMED_SERVER_LIMIT", "-2", "AFHUB_NAMED_SERVER_LIMIT=-2 must be at least 0"),
        ("AFHUB_CULL_ENABLED", "maybe", "AFHUB_CULL_ENABLED='maybe' must be true or false"),
    ],
)
def test_bad_culling_settings_are_refused_naming_the_variable(env, name, value, message):
    env.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(Config())
    assert message in str(caught.value)


@pytest.mark.usefixtures("env")
def test_a_negative_timeout_in_the_yaml_file_is_refused():
    # load_settings lets a TraitError raised while applying the YAML file through (it
    # wraps only the defaults): the message still names the setting and the minimum
    with pytest.raises((SettingsError, TraitError), match=r"cull_timeout_gpu.*less than 0"):
        load_settings(Config({"FacilitySettings": {"cull_timeout_gpu": -5}}))


def test_the_culler_is_a_hub_service_with_only_the_scopes_it_needs(env):
    env.setenv("AFHUB_CULL_TIMEOUT_GPU", "300")
    c = build_config(FacilitySettings())
    (service,) = [s for s in c.JupyterHub.services if s["name"] == CULLER_SERVICE]
    assert service["command"][1:] == ["-m", "afhub.services.culler"]
    assert "url" not in service  # no HTTP endpoint
    assert service["environment"]["AFHUB_CULL_TIMEOUT_GPU"] == "300"
    assert service["environment"]["AFHUB_CULL_TIMEOUT_CPU"] == "3600"
    (role,) = [r for r in c.JupyterHub.load_roles if r.get("services") == [CULLER_SERVICE]]
    assert sorted(role["scopes"]) == sorted(CULLER_SCOPES)
    assert not any(s.startswith(("admin", "users", "servers")) for s in role["scopes"])
    # the other services are still there
    names = {s["name"] for s in c.JupyterHub.services}
    assert {"facility", "accountant", "fitting", CULLER_SERVICE} <= names


def test_culling_off_means_no_culler_service(env):
    env.setenv("AFHUB_CULL_ENABLED", "false")
    c = build_config(FacilitySettings())
    assert CULLER_SERVICE not in {s["name"] for s in c.JupyterHub.services}
    assert not [r for r in c.JupyterHub.load_roles if r.get("services") == [CULLER_SERVICE]]


def test_named_servers_on_with_a_limit_or_off(env):
    c = build_config(FacilitySettings())
    assert c.JupyterHub.allow_named_servers is True
    assert c.JupyterHub.named_server_limit_per_user == 3
    env.setenv("AFHUB_NAMED_SERVER_LIMIT", "0")
    c = build_config(FacilitySettings())
    assert c.JupyterHub.allow_named_servers is False


# -- kinds from the ledger, the arbiter --


@pytest.fixture
def stores(tmp_path):
    """A facility database with a GPU and an FPGA resource in its registry."""
    opened = Stores.open(f"sqlite:///{tmp_path / 'afhub.sqlite'}")
    opened.groups.create("atlas")
    for user in ("ann", "bob"):
        opened.groups.add_member("atlas", user)
    opened.registry.add_provider({"name": "lab", "institution": "A Lab"})
    common = {"provider": "lab", "site": "here", "count_per_node": 1, "cpu_per_node": 8}
    common |= {"memory_per_node": "32Gi", "allowed_groups": ["atlas"]}
    opened.registry.add_resource(
        {"name": "a100", "kind": "gpu", "extended_resource": "nvidia.com/gpu"}
        | {"image": "ghcr.io/afhub/notebook-gpu:1", "accelerator": "NVIDIA A100"}
        | common
    )
    opened.registry.add_resource(
        {"name": "u250", "kind": "fpga", "extended_resource": "xilinx.com/fpga-xilinx_u250"}
        | {"image": "ghcr.io/afhub/notebook-fpga:1", "accelerator": "AMD Alveo U250"}
        | common
    )
    yield opened
    opened.close()


def open_server(stores, user, name, resource, gpus=0):
    admission = stores.ledger.admit(
        user=user,
        charge=Charge("server", cpu_cores=1, gpus=gpus, resource=resource),
        server_name=name,
    )
    stores.ledger.mark_running(admission.interval_id)
    return admission.interval_id


def test_kinds_of_running_servers_come_from_their_ledger_interval_and_the_registry(stores):
    open_server(stores, "ann", "", "local")  # the built-in local server: not in the registry
    open_server(stores, "ann", "fit", "a100", gpus=1)
    open_server(stores, "bob", "", "u250")
    closed = open_server(stores, "bob", "old", "a100", gpus=1)
    stores.ledger.close(closed)
    by_server, resource_kinds = current_kinds(stores)
    assert resource_kinds == {"a100": "gpu", "u250": "fpga"}
    assert by_server == {("ann", ""): "cpu", ("ann", "fit"): "gpu", ("bob", ""): "fpga"}
    # stopped servers are not considered


def test_arbiter_culls_the_idle_gpu_and_fpga_servers_and_keeps_the_cpu_one(stores, caplog):
    open_server(stores, "ann", "", "local")
    open_server(stores, "ann", "fit", "a100", gpus=1)
    open_server(stores, "bob", "", "u250")
    by_server, resource_kinds = current_kinds(stores)
    culled = []
    policy = CullPolicy({"cpu": 3600, "gpu": 1200, "fpga": 1200})
    arbiter = make_arbiter(policy, by_server, resource_kinds, now=lambda: NOW, culled=culled)
    caplog.set_level(logging.INFO, logger="afhub.culler")
    # the same idle time: the GPU and FPGA servers go, the CPU one stays
    assert arbiter(inactive=None, inactive_limit=0, server=model("ann", "fit", idle_s=1800))
    assert arbiter(inactive=None, inactive_limit=0, server=model("bob", "", idle_s=1800))
    assert not arbiter(inactive=None, inactive_limit=0, server=model("ann", "", idle_s=1800))
    assert [(c.user, c.server_name, c.kind) for c in culled] == [
        ("ann", "fit", "gpu"),
        ("bob", "", "fpga"),
    ]
    assert "Culling user ann server fit kind gpu idle 00:30:00" in caplog.text
    assert "Culling user bob server (default) kind fpga idle 00:30:00" in caplog.text
    assert "user ann server (default)" not in caplog.text


def test_a_registry_that_cannot_be_read_leaves_every_server_cpu(stores, caplog):
    open_server(stores, "ann", "fit", "a100", gpus=1)
    with stores.db.engine.begin() as conn:  # a registry table lost: loading it fails
        conn.execute(text("DROP TABLE afhub_registry_resources"))
    by_server, resource_kinds = current_kinds(stores)
    assert by_server == {("ann", "fit"): "cpu"}
    assert resource_kinds == {}
    assert "could not read the resource registry" in caplog.text


def test_a_server_with_no_ledger_interval_falls_back_to_its_profile_option():
    resource_kinds = {"u250": "fpga"}
    fpga = server_activity(model("cy", "x", options={"profile": "u250"}), {}, resource_kinds)
    assert (fpga.user, fpga.server_name, fpga.kind) == ("cy", "x", "fpga")
    junk = server_activity(model("cy", options={"profile": ["u250"]}), {}, resource_kinds)
    assert junk.kind == "cpu"
    bare = server_activity(model("cy"), {}, resource_kinds)
    assert bare.kind == "cpu"
    assert bare.started == NOW - timedelta(seconds=7200)


def test_arbiter_applies_the_maximum_age_and_a_missing_activity():
    policy = CullPolicy({"cpu": 3600}, max_age=3600 * 8)
    arbiter = make_arbiter(policy, {}, {}, now=lambda: NOW)
    busy_but_old = model("dan", idle_s=1, age_s=3600 * 9)
    assert arbiter(inactive=None, inactive_limit=0, server=busy_but_old)
    fresh = model("dan", idle_s=1, age_s=60)
    assert not arbiter(inactive=None, inactive_limit=0, server=fresh)
    never_active = dict(model("dan", age_s=4000), last_activity=None)
    assert arbiter(inactive=None, inactive_limit=0, server=never_active)
