"""afhub on Zero to JupyterHub: the hub loads this file from ``jupyterhub_config.d``
after z2jh's own configuration (the chart mounts it from the ConfigMap ``afhub-hub-config``).

It applies the same ``afhub.hubconfig`` functions the local facility applies (login, the
facility API and the accountant, fitting, culling, named servers, logging), from the same
settings (``$AFHUB_CONFIG``, ``$AFHUB_DB_URL``) and registry (``$AFHUB_REGISTRY``), creates
the initial group tree with its quotas (``$AFHUB_GROUPS``) where it is missing, then
turns what runs as local processes into what runs on Kubernetes:

* afhub's services run as their own Deployments: each service keeps its name, roles and
  OAuth settings, loses its ``command`` and ``environment``, takes the URL of its Kubernetes
  Service (``kube.json``, written by the chart) and the API token z2jh generated for it;
* Dask Gateway is the dask-gateway chart's, as in daskhub: the hub service
  ``dask-gateway`` points at its traefik Service, user servers get ``DASK_GATEWAY__*``;
* the spawner is ``AfhubKubeSpawner`` (profiles from the registry, charging at spawn).

A file of ``jupyterhub_config.d`` gets a fresh config from ``get_config()`` whose lists
replace the hub's when merged, so z2jh's own entries of ``hub.services`` (with the API tokens
z2jh generated) and ``hub.loadRoles`` are read here as z2jh's ``jupyterhub_config.py`` reads
them, through its ``z2jh`` module (on the hub's path), and kept.
"""

import json
import os
from pathlib import Path

import yaml
from traitlets.config import Config

from afhub.hubconfig import (
    DASK_GATEWAY_SERVICE,
    FACILITY_SERVICE,
    apply_registry_file,
    configure_culling,
    configure_fitting,
    configure_groups_and_quotas,
    configure_logging,
    configure_login,
    configure_named_servers,
    configure_templates,
    prepare_home,
)
from afhub.hubconfig.dashboards import configure as configure_dashboards
from afhub.hubconfig.extension import configure as configure_server_extension
from afhub.hubconfig.pages import configure as configure_pages
from afhub.settings import FacilitySettings, load_config_file
from afhub.stores.migrate import upgrade

#: what the chart knows of the cluster: Service URLs, the gateway's addresses, admins
KUBE_FILE = Path(os.environ.get("AFHUB_KUBE_FILE", "/etc/afhub/kube.json"))
#: the initial group tree and quotas (``afhub.groups`` of the values)
GROUPS_FILE = Path(os.environ.get("AFHUB_GROUPS", "/etc/afhub/groups.yaml"))


def apply_initial_groups(db_url: str, tree: dict) -> list[str]:
    """Create the groups of the initial tree that do not exist yet, parents first, with
    their quotas; groups that exist are left as they are (administrators change them
    later, with ``afhub groups``/``afhub quota`` or the facility API). Returns those made."""
    from afhub.stores.errors import AlreadyExists
    from afhub.stores.facade import Stores

    stores = Stores.open(db_url, migrate=False)
    created = []
    try:
        for path in sorted(tree, key=lambda p: p.count("/")):
            try:
                stores.groups.create(path)
            except AlreadyExists:
                continue
            quota = (tree[path] or {}).get("quota")
            if quota:
                stores.quotas.set(path, quota)
            created.append(path)
    finally:
        stores.close()
    return created


def z2jh_entries() -> tuple[list[dict], list[dict]]:
    """z2jh's services (with their tokens) and roles, as its jupyterhub_config.py makes them."""
    from z2jh import get_config, get_secret_value

    services = []
    for key, service in get_config("hub.services", {}).items():
        entry = {k: v for k, v in service.items() if k != "apiToken"}
        entry.setdefault("name", key)
        entry["api_token"] = get_secret_value(f"hub.services.{key}.apiToken")
        services.append(entry)
    roles = [{"name": key, **role} for key, role in get_config("hub.loadRoles", {}).items()]
    return services, roles


def afhub_config(
    settings: FacilitySettings, kube: dict, z2jh_services: list[dict], z2jh_roles: list[dict]
) -> Config:
    """afhub's hub configuration for Kubernetes; z2jh's service entries (with their API
    tokens) are kept and completed, its roles kept."""
    c = Config()
    for step in (
        configure_logging,
        configure_login,
        configure_groups_and_quotas,
        configure_fitting,
        configure_culling,
        configure_named_servers,
        configure_server_extension,
        configure_pages,
        configure_dashboards,
        configure_templates,
    ):
        step(c, settings)
    z2jh = {service["name"]: service for service in z2jh_services}
    services = []
    for service in c.JupyterHub.services:
        entry = {k: v for k, v in service.items() if k not in ("command", "environment", "url")}
        url = kube["services"].get(service["name"])
        if url:
            entry["url"] = url
        services.append({**z2jh.pop(service["name"], {}), **entry})
    gateway = z2jh.pop(DASK_GATEWAY_SERVICE, None)
    if gateway is not None and kube.get("gateway_url"):
        services.append({**gateway, "url": kube["gateway_url"], "oauth_no_confirm": True})
        c.Spawner.server_token_scopes = [
            *c.Spawner.server_token_scopes,
            f"access:services!service={DASK_GATEWAY_SERVICE}",
        ]
        c.Spawner.environment = {
            **c.Spawner.environment,
            "DASK_GATEWAY__ADDRESS": kube["public_gateway_url"],
            "DASK_GATEWAY__PUBLIC_ADDRESS": f"/services/{DASK_GATEWAY_SERVICE}/",
            "DASK_GATEWAY__PROXY_ADDRESS": kube["gateway_proxy_address"],
            "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
        }
    c.JupyterHub.services = [*services, *z2jh.values()]
    c.JupyterHub.load_roles = [*z2jh_roles, *c.JupyterHub.load_roles]
    c.Spawner.environment = {
        **c.Spawner.environment,
        "AFHUB_FITTING_URL": kube["fitting_url"],
        # the facility API through the same proxy as the fitting service (afhub_server)
        "AFHUB_FACILITY_URL": kube["fitting_url"].replace(
            "/services/fitting/", f"/services/{FACILITY_SERVICE}/"
        ),
    }
    c.JupyterHub.spawner_class = "afhub-kube"
    c.Spawner.default_url = settings.default_url
    c.AfhubKubeSpawner.facility_db_url = settings.db_url
    if kube.get("admin_users"):
        c.Authenticator.admin_users = set(kube["admin_users"])
    if settings.authenticator == "cilogon":
        c.AfhubCILogonAuthenticator.client_id = os.environ.get("AFHUB_CILOGON_CLIENT_ID", "")
        c.AfhubCILogonAuthenticator.client_secret = os.environ.get(
            "AFHUB_CILOGON_CLIENT_SECRET", ""
        )
        idps = os.environ.get("AFHUB_CILOGON_IDENTITY_PROVIDERS", "")
        if idps.strip():  # the Secret's; afhub.auth.identityProviders (afhub.yaml) wins
            c.AfhubCILogonAuthenticator.identity_providers = yaml.safe_load(idps)
        if kube.get("public_url"):
            callback = f"{kube['public_url'].rstrip('/')}/hub/oauth_callback"
            c.AfhubCILogonAuthenticator.oauth_callback_url = callback
    return c


def configure_kubernetes(c: Config) -> None:
    """Apply afhub to z2jh's configuration ``c``: migrate the facility database, apply the
    registry file, then merge :func:`afhub_config`."""
    overrides = load_config_file()
    settings = FacilitySettings(config=overrides)
    prepare_home(settings)
    upgrade(settings.db_url)
    apply_registry_file(settings)
    if GROUPS_FILE.exists():
        apply_initial_groups(settings.db_url, yaml.safe_load(GROUPS_FILE.read_text()) or {})
    kube = json.loads(KUBE_FILE.read_text(encoding="utf-8"))
    c.merge(afhub_config(settings, kube, *z2jh_entries()))
    c.merge(overrides)


configure_kubernetes(get_config())  # noqa: F821 - get_config is provided by the config loader
