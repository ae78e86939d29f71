"""The gateway the chart configures loads afhub's backend: the Python the dask-gateway
chart's gateway would run (its backend and authenticator lines for these values, then the
chart's ``gateway.extraConfig`` blocks in key order, as upstream's
``dask_gateway_config.py`` appends them) loaded by traitlets' own config loader into
dask-gateway's ``DaskGateway`` application, for every values file; the backend it names,
given the facility database of the ``AFHUB_DB_URL`` the chart sets from the Secret
``afhub-database``, offers the options form from that database. No cluster here: the
upstream chart itself is not rendered (not downloadable), see docs/deploy.md."""

from __future__ import annotations

import asyncio

import pytest
from dask_gateway_server.app import DaskGateway
from dask_gateway_server.auth import JupyterHubAuthenticator
from dask_gateway_server.backends.kubernetes import KubeBackend
from dask_gateway_server.models import User
from traitlets import TraitError
from traitlets.config import PyFileConfigLoader

from afhub.services.gateway.auth import AfhubHubAuthenticator
from afhub.services.gateway.kube import AfhubKubeBackend
from afhub.services.gateway.workers import WorkerCharging
from afhub.stores.facade import Stores
from tests.chart.conftest import VALUES_FILES, chart_values

#: what upstream's dask_gateway_config.py sets from ``gateway.auth.type: jupyterhub``
AUTHENTICATORS = {"jupyterhub": "dask_gateway_server.auth.JupyterHubAuthenticator"}


def gateway_config(values: dict) -> str:
    gateway = values["dask-gateway"]["gateway"]
    lines = [
        'c.DaskGateway.backend_class = "dask_gateway_server.backends.kubernetes.KubeBackend"',
        f"c.DaskGateway.authenticator_class = {AUTHENTICATORS[gateway['auth']['type']]!r}",
    ]
    extra = gateway.get("extraConfig") or {}
    blocks = [extra] if isinstance(extra, str) else [extra[k] for k in sorted(extra)]
    return "\n".join(lines + blocks) + "\n"


def env_of(values: dict) -> dict[str, str]:
    """The gateway's environment from literal values; Secret references marked."""
    env = {}
    for item in values["dask-gateway"]["gateway"].get("env") or []:
        env[item["name"]] = item.get("value", "<from secret>")
    return env


@pytest.mark.parametrize("values", VALUES_FILES)
def test_gateway_loads_afhubs_backend(values, tmp_path, monkeypatch):
    merged = chart_values(values)
    env = env_of(merged)
    assert env["AFHUB_DB_URL"] == "<from secret>"
    assert env["AFHUB_PAGES_PREFIX"] == "/services/afhub/"
    url = f"sqlite:///{tmp_path / 'facility.sqlite'}"
    monkeypatch.setenv("AFHUB_DB_URL", url)
    path = tmp_path / "dask_gateway_config.py"
    path.write_text(gateway_config(merged))
    config = PyFileConfigLoader(path.name, str(tmp_path)).load_config()
    app = DaskGateway(config=config)
    # afhub's authenticator replaces the one upstream's chart names for auth type jupyterhub
    assert app.authenticator_class is AfhubHubAuthenticator
    assert issubclass(app.authenticator_class, JupyterHubAuthenticator)
    assert app.backend_class is AfhubKubeBackend
    assert issubclass(app.backend_class, KubeBackend)
    backend = app.backend_class(parent=app)
    assert backend.facility_db_url == url


def test_gateway_backend_offers_the_facility_databases_options(tmp_path, monkeypatch):
    """The backend the chart's gateway loads offers the options form of the facility
    database ``AFHUB_DB_URL`` names (a migrated SQLite database here)."""
    url = f"sqlite:///{tmp_path / 'facility.sqlite'}"
    monkeypatch.setenv("AFHUB_DB_URL", url)
    path = tmp_path / "dask_gateway_config.py"
    path.write_text(gateway_config(chart_values("minimal")))
    app = DaskGateway(config=PyFileConfigLoader(path.name, str(tmp_path)).load_config())
    backend = app.backend_class(parent=app)
    stores = Stores.open(backend.facility_db_url)
    try:
        stores.groups.create("cms")
        stores.groups.add_member("cms", "ann")
        stores.quotas.set("cms", {"max_dask_cores": 6})
        backend.stores, backend.workers = stores, WorkerCharging(stores)
        form = asyncio.run(backend.get_cluster_options(User("ann", groups=[])))
        assert form.get_specification()[0]["spec"]["options"] == ["cms"]
    finally:
        stores.close()


def test_a_wrong_backend_name_fails_to_load(tmp_path):
    values = chart_values("minimal")
    values["dask-gateway"]["gateway"]["extraConfig"]["afhub"] = (
        'c.DaskGateway.backend_class = "afhub.services.gateway.kube.NoSuchBackend"'
    )
    path = tmp_path / "dask_gateway_config.py"
    path.write_text(gateway_config(values))
    config = PyFileConfigLoader(path.name, str(tmp_path)).load_config()
    with pytest.raises(TraitError, match="NoSuchBackend"):
        DaskGateway(config=config)
