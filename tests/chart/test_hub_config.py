"""The hub configuration the chart produces, loaded by JupyterHub's own config loader, is
the local facility's for the same settings and registry; its profiles and pods are those
``AfhubKubeSpawner`` builds in tests/kube.

z2jh's hub loads ``/usr/local/etc/jupyterhub/jupyterhub_config.py``, which adds one entry
per ``hub.services`` key (name and generated API token) and loads every file of
``jupyterhub_config.d``; a small stand-in does the same here with the chart's values, then
``load_subconfig`` loads the rendered ``afhub.py`` exactly as the hub would. The facility
database is SQLite in a temporary folder (the same migrations and registry apply as on
PostgreSQL).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
import yaml
from jupyterhub.app import JupyterHub
from kubernetes_asyncio.client import ApiClient

from afhub.auth.cilogon import AfhubCILogonAuthenticator
from afhub.auth.idp_policy import PolicyError
from afhub.hubconfig import build_config
from afhub.settings import FacilitySettings, load_config_file
from afhub.spawners.kube import AfhubKubeSpawner
from afhub.stores.facade import Stores
from tests.chart.conftest import ROOT, chart_values, find

EXAMPLE = str(ROOT / "tests" / "registry" / "example.yaml")
#: afhub's services, the same in both modes
AFHUB_SERVICES = {
    "facility",
    "accountant",
    "fitting",
    "culler",
    "dask-gateway",
    "afhub",
    "dashboards",
}

#: z2jh's jupyterhub_config.py, as far as afhub's file depends on it
Z2JH_CONFIG = """\
import sys
sys.path.insert(0, {etc!r})
c = get_config()
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
load_subconfig({afhub!r})
"""
#: z2jh's module: the chart's values and the tokens z2jh generates
Z2JH_MODULE = """\
VALUES = {values!r}


def get_config(key, default=None):
    found = VALUES
    for part in key.split("."):
        found = found.get(part, {{}}) if isinstance(found, dict) else {{}}
    return found or default


def get_secret_value(key):
    return "token-" + key.split(".")[2]
"""


class Loaded(SimpleNamespace):
    kube: object  # the chart's hub configuration
    local: object  # the local facility's, same settings


def load(rendered, tmp: Path, values: str, **secret: str) -> Loaded:
    manifests = rendered[values]
    etc = tmp / "etc"
    etc.mkdir()
    for name, text in find(manifests, "ConfigMap", "afhub-config")["data"].items():
        (etc / name).write_text(text)
    afhub_py = etc / "afhub.py"
    afhub_py.write_text(find(manifests, "ConfigMap", "afhub-hub-config")["data"]["afhub.py"])
    (etc / "z2jh.py").write_text(Z2JH_MODULE.format(values=chart_values(values)["jupyterhub"]))
    config_py = etc / "jupyterhub_config.py"
    config_py.write_text(Z2JH_CONFIG.format(etc=str(etc), afhub=str(afhub_py)))
    env = {
        "AFHUB_CONFIG": str(etc / "afhub.yaml"),
        "AFHUB_REGISTRY": str(etc / "registry.yaml"),
        "AFHUB_KUBE_FILE": str(etc / "kube.json"),
        "AFHUB_GROUPS": str(etc / "groups.yaml"),
        "AFHUB_HOME": str(tmp / "home"),
        "AFHUB_DB_URL": f"sqlite:///{tmp / 'facility.sqlite'}",
        "AFHUB_CILOGON_CLIENT_ID": "cilogon:/client_id/x",
        "AFHUB_CILOGON_CLIENT_SECRET": "secret",
        **secret,
    }
    # z2jh's config puts the config folder (with afhub.py) first on sys.path: restored, or
    # every later `import afhub` in a spawned process of this test worker finds that file
    with (
        mock.patch.dict(os.environ, env),
        mock.patch.dict(sys.modules),
        mock.patch.object(sys, "path", list(sys.path)),
    ):
        app = JupyterHub()
        app.load_config_file(str(config_py))
        overrides = load_config_file()
        local = build_config(FacilitySettings(config=overrides), overrides)
    return Loaded(
        kube=app.config, local=local, db_url=env["AFHUB_DB_URL"], env=env, config_py=config_py
    )


@pytest.fixture(scope="module")
def gpu_fpga(rendered, tmp_path_factory) -> Loaded:
    return load(rendered, tmp_path_factory.mktemp("gpu-fpga"), "gpu-fpga")


@pytest.fixture(scope="module")
def cilogon(rendered, tmp_path_factory) -> Loaded:
    return load(rendered, tmp_path_factory.mktemp("cilogon"), "cilogon-postgres")


def by_name(entries) -> dict:
    return {entry["name"]: entry for entry in entries}


@pytest.mark.parametrize("which", ["gpu_fpga", "cilogon"])
def test_same_login_services_and_scopes(request, which):
    loaded = request.getfixturevalue(which)
    kube, local = loaded.kube, loaded.local
    assert kube.JupyterHub.authenticator_class == local.JupyterHub.authenticator_class
    assert callable(kube.Authenticator.post_auth_hook)
    kube_services, local_services = (
        by_name(kube.JupyterHub.services),
        by_name(local.JupyterHub.services),
    )
    assert set(local_services) == AFHUB_SERVICES
    assert set(kube_services) == AFHUB_SERVICES | {"prometheus"}
    for name in AFHUB_SERVICES:
        kube_service = kube_services[name]
        assert "command" not in kube_service, name
        assert kube_service["api_token"] == f"token-{name}"
        assert kube_service.get("oauth_no_confirm") == local_services[name].get("oauth_no_confirm")
        assert ("url" in kube_service) == ("url" in local_services[name]), name
    assert kube_services["facility"]["url"] == "http://afhub-facility:8082"
    assert kube_services["dask-gateway"]["url"] == "http://traefik-af-dask-gateway"
    local_roles = by_name(local.JupyterHub.load_roles)
    kube_roles = by_name(kube.JupyterHub.load_roles)
    assert {k: kube_roles[k] for k in local_roles} == local_roles
    assert kube.Spawner.server_token_scopes == local.Spawner.server_token_scopes
    assert set(kube.Spawner.environment) == set(local.Spawner.environment)
    assert kube.Spawner.environment["DASK_GATEWAY__AUTH__TYPE"] == "jupyterhub"
    assert kube.Spawner.default_url == local.Spawner.default_url
    assert kube.JupyterHub.allow_named_servers == local.JupyterHub.allow_named_servers
    assert kube.JupyterHub.spawner_class == "afhub-kube"
    # afhub's templates and its navbar links (the pages, the dashboards) on every hub page
    assert kube.JupyterHub.template_paths == local.JupyterHub.template_paths
    assert kube.JupyterHub.template_vars == local.JupyterHub.template_vars


def test_cilogon_client_from_the_secret(cilogon):
    authenticator = cilogon.kube.AfhubCILogonAuthenticator
    assert cilogon.kube.JupyterHub.authenticator_class == "afhub-cilogon"
    assert authenticator.client_id == "cilogon:/client_id/x"
    assert authenticator.oauth_callback_url == "https://af.example.org/hub/oauth_callback"
    assert "https://idp.a.edu/idp/shibboleth" in authenticator.identity_providers
    assert cilogon.kube.Authenticator.admin_users == {"alice"}


def group_quota(db_url: str, path: str) -> dict:
    stores = Stores.open(db_url, migrate=False)
    try:
        return {
            "paths": {g.path for g in stores.groups.list()},
            **stores.quotas.get(path).to_dict(),
        }
    finally:
        stores.close()


def test_initial_groups_and_quotas_created_once(gpu_fpga):
    found = group_quota(gpu_fpga.db_url, "atlas")
    assert {"users", "atlas", "cms", "cms/fpga", "cms/gpu-users"} <= found["paths"]
    assert found["gpu_hours"] == 500
    assert found["max_gpus"] == 2
    stores = Stores.open(gpu_fpga.db_url, migrate=False)
    try:
        stores.quotas.set("atlas", {"gpu_hours": 50})  # an administrator's change
    finally:
        stores.close()
    with (
        mock.patch.dict(os.environ, gpu_fpga.env),
        mock.patch.dict(sys.modules),
        mock.patch.object(sys, "path", list(sys.path)),
    ):
        JupyterHub().load_config_file(str(gpu_fpga.config_py))  # the hub starts again
    assert group_quota(gpu_fpga.db_url, "atlas")["gpu_hours"] == 50


MINIMAL_IDPS = """\
https://idp.example.edu/idp/shibboleth: {name: Example U, strip_domain: example.edu}
"""


def test_defaults_and_two_secrets_make_a_facility(rendered, tmp_path):
    """The chart's defaults, the database Secret and the CILogon Secret (client and
    identity providers): the hub's configuration loads and CILogon login is configured."""
    loaded = load(rendered, tmp_path, "minimal", AFHUB_CILOGON_IDENTITY_PROVIDERS=MINIMAL_IDPS)
    assert loaded.kube.JupyterHub.authenticator_class == "afhub-cilogon"
    authenticator = AfhubCILogonAuthenticator(config=loaded.kube)
    assert authenticator.client_id == "cilogon:/client_id/x"
    assert list(authenticator.identity_providers) == ["https://idp.example.edu/idp/shibboleth"]
    assert {s["name"] for s in loaded.kube.JupyterHub.services} >= AFHUB_SERVICES


def test_defaults_without_identity_providers_refused_with_a_message(rendered, tmp_path):
    loaded = load(rendered, tmp_path, "minimal")
    with pytest.raises(PolicyError, match="identity_providers is empty"):
        AfhubCILogonAuthenticator(config=loaded.kube)


def make_user(name: str, groups) -> SimpleNamespace:
    return SimpleNamespace(
        name=name, id=1, url=f"/user/{name}/", groups=[SimpleNamespace(name=g) for g in groups]
    )


async def profiles_and_pods(user, **traits) -> tuple[list[dict], dict[str, dict]]:
    """The user's profile list and the pod of each profile's first choice."""
    pods = {}
    profiles: list[dict] = []
    async with ApiClient() as api:
        with mock.patch("kubespawner.spawner.load_config"):
            spawner = AfhubKubeSpawner(_mock=True, user=user, charging=False, **traits)
        profiles = await spawner.afhub_profile_list()
        await spawner.api.api_client.close()
        for profile in profiles:
            with mock.patch("kubespawner.spawner.load_config"):
                spawner = AfhubKubeSpawner(_mock=True, user=user, charging=False, **traits)
            spawner.user_options = {"profile": profile["slug"]}
            await spawner.load_user_options()
            pods[profile["slug"]] = api.sanitize_for_serialization(await spawner.get_pod_manifest())
            await spawner.api.api_client.close()
    return profiles, pods


#: users' groups whose profiles, together, offer every resource of the example registry
GROUP_SETS = [("atlas",), ("cms/fpga",), ("users", "cms/gpu-users")]


def test_group_sets_reach_every_resource():
    registry = yaml.safe_load(Path(EXAMPLE).read_text())
    held = {g for groups in GROUP_SETS for g in groups}
    for resource in registry["resources"]:
        assert held & set(resource["allowed_groups"]), resource["name"]


@pytest.mark.parametrize("groups", GROUP_SETS)
def test_profiles_and_pods_as_in_the_kube_tests(gpu_fpga, groups):
    """Registry from the chart (applied to the database by the hub's configuration) and the
    chart's spawner settings give the profiles and pods of tests/kube's spawner."""
    user = make_user("alice", groups)
    chart = asyncio.run(profiles_and_pods(user, config=gpu_fpga.kube))
    reference = asyncio.run(profiles_and_pods(user, registry=EXAMPLE))
    assert chart[0] == reference[0]
    # the servers' environment from the hub configuration (the fitting service, the gateway,
    # the default URL, compared with the local facility's above) is what the chart adds
    extra = {*gpu_fpga.kube.Spawner.environment, "JUPYTERHUB_DEFAULT_URL"}
    assert set(chart[1]) == set(reference[1])
    for slug, pod in chart[1].items():
        container = pod["spec"]["containers"][0]
        names = {e["name"] for e in container["env"]}
        reference_names = {e["name"] for e in reference[1][slug]["spec"]["containers"][0]["env"]}
        assert names - reference_names == extra, slug
        container["env"] = [e for e in container["env"] if e["name"] not in extra]
        assert pod == reference[1][slug], slug
    assert chart[0], "the user sees some profile"
    assert chart[1], "a pod per profile"
