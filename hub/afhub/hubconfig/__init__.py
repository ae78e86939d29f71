"""Turn afhub's settings into JupyterHub configuration.

:func:`configure` is what ``afhub/jupyterhub_config.py`` calls; it only sets values on a
traitlets ``Config``, so tests call it directly and check the result. Each part of the
facility has a ``configure_*`` function, each reading only settings; a larger part has a
module of its own in this package with a ``configure(c, settings)`` (listed in ``PARTS``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from traitlets.config import Config

from afhub.settings import AUTHENTICATORS, FacilitySettings, SettingsError, load_config_file


def configure_paths_and_ports(c: Config, settings: FacilitySettings) -> None:
    """Where the hub listens and keeps state."""
    home = settings.home_path
    # The prefix goes into bind_url: JupyterHub.base_url set alone would rebuild bind_url
    # from JupyterHub's default port.
    c.JupyterHub.bind_url = f"http://{settings.ip}:{settings.port}{settings.base_url}"
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{settings.hub_port}"
    c.JupyterHub.db_url = settings.hub_db_url
    c.JupyterHub.cookie_secret_file = str(settings.cookie_secret_path)
    c.JupyterHub.pid_file = str(home / "jupyterhub.pid")
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings.proxy_api_port}"
    c.ConfigurableHTTPProxy.command = [settings.proxy_command]
    c.ConfigurableHTTPProxy.pid_file = str(home / "proxy.pid")
    # Ctrl-C on the facility stops every process it started; state stays in the database.
    c.JupyterHub.cleanup_servers = True
    c.JupyterHub.cleanup_proxy = True


def configure_logging(c: Config, settings: FacilitySettings) -> None:
    """Log to the terminal and to ``$AFHUB_HOME/logs/jupyterhub.log``."""
    c.JupyterHub.logging_config = {
        # no credential in a log line, whatever logs it (issue 11)
        "filters": {"afhub_secrets": {"()": "afhub.services.logfilter.ScrubSecrets"}},
        "handlers": {
            "console": {"filters": ["afhub_secrets"]},
            "afhub_file": {
                "class": "logging.FileHandler",
                "formatter": "console",
                "level": "INFO",
                "filename": str(settings.logs_path / "jupyterhub.log"),
                "filters": ["afhub_secrets"],
            },
        },
        "loggers": {"JupyterHub": {"level": "INFO", "handlers": ["console", "afhub_file"]}},
    }


def configure_login(c: Config, settings: FacilitySettings) -> None:
    """The authenticator chosen by ``FacilitySettings.authenticator``."""
    c.JupyterHub.authenticator_class = AUTHENTICATORS[settings.authenticator]
    if settings.authenticator == "local":
        c.AfhubLocalAuthenticator.admin_password_file = str(settings.admin_password_path)


def configure_spawner(c: Config, settings: FacilitySettings) -> None:
    """Local servers with JupyterLab."""
    c.JupyterHub.spawner_class = "afhub-local"
    c.Spawner.default_url = settings.default_url
    c.AfhubLocalSpawner.homes_root = str(settings.user_homes_path)
    c.AfhubLocalSpawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
    c.Spawner.start_timeout = 60
    c.Spawner.http_timeout = 60


#: extra options of the OAuth cookies of afhub's services (``HubOAuth`` reads them from
#: ``$JUPYTERHUB_COOKIE_OPTIONS``; it sets ``HttpOnly`` and the path, not ``SameSite``)
SERVICE_COOKIE_OPTIONS = '{"samesite": "Lax"}'

#: name of the facility API service (served at ``/services/facility/``)
FACILITY_SERVICE = "facility"
#: name of the accountant service (checkpoints, enforcement, group mirror)
ACCOUNTANT_SERVICE = "accountant"


def _service(name: str, module: str, env: dict[str, str], port: int | None = None) -> dict:
    """A hub-managed service running ``python -m module``; one with a ``port`` is served
    at ``/services/<name>/`` and logs users in through the hub without a confirmation."""
    service: dict = {"name": name}
    if port is not None:
        service["url"] = f"http://127.0.0.1:{port}"
    service["command"] = [sys.executable, "-m", module]
    service["environment"] = env
    if port is not None:
        service["oauth_no_confirm"] = True
    return service


def _add_service(c: Config, service: dict) -> None:
    c.JupyterHub.services = [*c.JupyterHub.get("services", []), service]


def _servers_reach(c: Config, service: str, environment: dict[str, str]) -> None:
    """Users' servers may call ``service`` with their token, told where by ``environment``."""
    scopes = list(
        c.Spawner.get("server_token_scopes", ["users:activity!user", "access:servers!server"])
    )
    c.Spawner.server_token_scopes = [*scopes, f"access:services!service={service}"]
    spawner_environment = dict(c.Spawner.get("environment", {}))
    spawner_environment.update(environment)
    c.Spawner.environment = spawner_environment


def configure_groups_and_quotas(c: Config, settings: FacilitySettings) -> None:
    """The facility API and the accountant as hub-managed services; charging at spawn;
    every login recorded in the facility database."""
    from afhub.auth.membership import make_login_hook
    from afhub.spawners.facility import stores_for

    env = {
        "AFHUB_HOME": settings.home,
        "AFHUB_DB_URL": settings.db_url,
        "AFHUB_CHECKPOINT_INTERVAL": str(settings.checkpoint_interval),
        "AFHUB_GRACE_PERIOD": str(settings.grace_period),
        "AFHUB_FACILITY_NAME": settings.facility_name,
        "JUPYTERHUB_COOKIE_OPTIONS": SERVICE_COOKIE_OPTIONS,
    }
    c.JupyterHub.services = [
        _service(FACILITY_SERVICE, "afhub.services.facility_api", env, port=settings.api_port),
        _service(ACCOUNTANT_SERVICE, "afhub.services.accountant", env),
    ]
    c.JupyterHub.load_roles = [
        # users may log in to afhub's services (the facility API, later fitting, Dask)
        {"name": "user", "scopes": ["self", "access:services"]},
        {
            "name": "afhub-accountant",
            "services": [ACCOUNTANT_SERVICE],
            "scopes": [
                "list:users",
                "read:users",
                "read:servers",
                "servers",
                "list:groups",
                "read:groups",
                "admin:groups",
                "groups",
            ],
        },
    ]
    c.AfhubLocalSpawner.facility_db_url = settings.db_url
    c.Authenticator.post_auth_hook = make_login_hook(
        lambda: stores_for(settings.db_url), settings.default_group
    )


#: name of the fitting service (served at ``/services/fitting/``)
FITTING_SERVICE = "fitting"


def configure_fitting(c: Config, settings: FacilitySettings) -> None:
    """The fitting service as a hub-managed service; user servers' tokens may call it and
    know its URL (``AFHUB_FITTING_URL``), so ``FitClient`` needs no configuration."""
    import os

    from afhub.settings import config_file_path

    env = {
        "AFHUB_HOME": settings.home,
        "AFHUB_DB_URL": settings.db_url,
        "AFHUB_CONFIG": str(config_file_path()),
        # the service's own settings (AFHUB_FIT_WORKERS, ...) pass through
        **{k: v for k, v in os.environ.items() if k.startswith("AFHUB_FIT_")},
        "JUPYTERHUB_COOKIE_OPTIONS": SERVICE_COOKIE_OPTIONS,
    }
    _add_service(
        c, _service(FITTING_SERVICE, "afhub.services.fitting", env, port=settings.fitting_port)
    )
    _servers_reach(
        c,
        FITTING_SERVICE,
        {"AFHUB_FITTING_URL": f"{settings.public_url}services/{FITTING_SERVICE}/"},
    )


#: name of the idle culler service (no HTTP endpoint)
CULLER_SERVICE = "culler"


def configure_culling(c: Config, settings: FacilitySettings) -> None:
    """The idle culler as a hub-managed service, with only the scopes it needs (list users
    and their servers' activity, stop servers); timeouts per resource kind from the
    settings. Nothing when ``cull_enabled`` is false."""
    if not settings.cull_enabled:
        return
    from afhub.services.culler import CULLER_SCOPES

    env = {
        "AFHUB_HOME": settings.home,
        "AFHUB_DB_URL": settings.db_url,
        "AFHUB_CULL_TIMEOUT_CPU": str(settings.cull_timeout_cpu),
        "AFHUB_CULL_TIMEOUT_GPU": str(settings.cull_timeout_gpu),
        "AFHUB_CULL_TIMEOUT_FPGA": str(settings.cull_timeout_fpga),
        "AFHUB_CULL_EVERY": str(settings.cull_every),
        "AFHUB_CULL_MAX_AGE": str(settings.cull_max_age),
    }
    _add_service(c, _service(CULLER_SERVICE, "afhub.services.culler", env))
    c.JupyterHub.load_roles = [
        *c.JupyterHub.get("load_roles", []),
        {"name": "afhub-culler", "services": [CULLER_SERVICE], "scopes": list(CULLER_SCOPES)},
    ]


def configure_named_servers(c: Config, settings: FacilitySettings) -> None:
    """Named servers, up to ``named_server_limit`` per user (0: off). Each is its own
    ledger interval, charged and counted in group quotas separately."""
    c.JupyterHub.allow_named_servers = settings.named_server_limit > 0
    c.JupyterHub.named_server_limit_per_user = settings.named_server_limit


#: name of the Dask Gateway service (served at ``/services/dask-gateway/``)
DASK_GATEWAY_SERVICE = "dask-gateway"


def configure_dask_gateway(c: Config, settings: FacilitySettings) -> None:
    """Dask Gateway as a hub-managed service (``afhub.services.gateway``) behind the hub's
    proxy; user servers' tokens may use it and their environment points
    ``dask_gateway.Gateway()`` at it, so it works with no arguments."""
    import os

    from afhub.services.gateway.config import client_environment
    from afhub.settings import config_file_path

    env = {
        "AFHUB_HOME": settings.home,
        "AFHUB_DB_URL": settings.db_url,
        "AFHUB_CONFIG": str(config_file_path()),
        "AFHUB_BASE_URL": settings.base_url,
        "AFHUB_IP": settings.ip,
        "AFHUB_PORT": str(settings.port),
        "AFHUB_GATEWAY_PORT": str(settings.gateway_port),
        "AFHUB_GATEWAY_PROXY_PORT": str(settings.gateway_proxy_port),
        "AFHUB_DASK_IDLE_TIMEOUT": str(settings.dask_idle_timeout),
        "AFHUB_CHECKPOINT_INTERVAL": str(settings.checkpoint_interval),
        "AFHUB_GRACE_PERIOD": str(settings.grace_period),
        # the gateway's own settings (AFHUB_DASK_MAX_WORKER_CORES, ...) pass through
        **{k: v for k, v in os.environ.items() if k.startswith("AFHUB_DASK_")},
    }
    # dashboards in a browser: the viewer logs in through the hub (OAuth)
    gateway = _service(
        DASK_GATEWAY_SERVICE, "afhub.services.gateway", env, port=settings.gateway_proxy_port
    )
    _add_service(c, gateway)
    _servers_reach(c, DASK_GATEWAY_SERVICE, client_environment(settings))


def configure_templates(c: Config, settings: FacilitySettings) -> None:  # noqa: ARG001
    """afhub's templates (``afhub/web/templates``) in front of the hub's own; a template
    there extends the original as ``templates/<name>.html``."""
    from afhub.web import TEMPLATES

    c.JupyterHub.template_paths = [str(TEMPLATES)]


def add_nav_link(c: Config, label: str, url: str) -> None:
    """A link in the hub's navigation bar, after the hub's own (Home, Token, Admin,
    Services), on every hub page (``afhub/web/templates/page.html``). ``url`` is absolute
    (it starts with the facility's base URL)."""
    variables = dict(c.JupyterHub.get("template_vars", {}))
    variables["afhub_nav"] = [*variables.get("afhub_nav", []), {"label": label, "url": url}]
    c.JupyterHub.template_vars = variables


def build_config(settings: FacilitySettings, overrides: Config | None = None) -> Config:
    """The complete JupyterHub configuration for these settings.

    ``overrides`` (the afhub YAML config file) is merged last, so an operator can set any
    JupyterHub, authenticator or spawner trait there.
    """
    c = Config()
    configure_paths_and_ports(c, settings)
    configure_logging(c, settings)
    configure_login(c, settings)
    configure_spawner(c, settings)
    configure_groups_and_quotas(c, settings)
    configure_fitting(c, settings)
    from afhub.hubconfig import extension

    extension.configure(c, settings)  # users' servers reach the facility API (afhub_server)
    configure_culling(c, settings)
    configure_named_servers(c, settings)
    configure_dask_gateway(c, settings)
    configure_templates(c, settings)
    from afhub.hubconfig import pages

    pages.configure(c, settings)  # the facility's pages; the services above lead to them
    from afhub.hubconfig import dashboards

    dashboards.configure(c, settings)  # the Voila dashboards, each kernel as its viewer
    if overrides is not None:
        c.merge(overrides)
    return c


#: umask of the facility's processes (the hub, its services, the servers it starts): every
#: file they create is private to the facility's user (databases, secrets, logs: 0600)
PRIVATE_UMASK = 0o077


def prepare_home(settings: FacilitySettings) -> None:
    """Create the state folders, private to the facility's user, and keep them so.

    ``mkdir`` leaves a folder that already exists as it is, so folders made before (an
    ``$AFHUB_HOME`` made 0755 by hand, by ``mkdir -p``, by an older afhub) are tightened
    to 0700, and files already in them that others could read (a database or secret
    created 0644 earlier) to 0600. The process umask becomes 0077, so that what the hub
    and the services it starts create from now on is private too.
    """
    os.umask(PRIVATE_UMASK)
    for path in (settings.home_path, settings.logs_path, settings.user_homes_path):
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        _tighten(folder, 0o700)
    for folder in (settings.home_path, settings.logs_path):
        for entry in folder.iterdir():
            if entry.is_file() and not entry.is_symlink():
                _tighten(entry, 0o600)


def _tighten(path: Path, mode: int) -> None:
    """Remove group and other permission bits from ``path`` (never follows a link)."""
    current = path.lstat().st_mode & 0o777
    if current & 0o077:
        os.chmod(path, current & mode, follow_symlinks=False)


def apply_registry_file(settings: FacilitySettings) -> dict[str, list[str]] | None:
    """Apply the declarative registry file (``registry_file``, ``AFHUB_REGISTRY``) as the
    registry's ``file`` entries. Raises :class:`SettingsError` (one line naming the file,
    the entry and the field) when it cannot be read or is refused; nothing is applied then.
    """
    if not settings.registry_file:
        return None
    import yaml

    from afhub.stores.errors import StoreError
    from afhub.stores.facade import Stores

    path = Path(settings.registry_file)
    where = f"registry file {path} (AFHUB_REGISTRY)"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SettingsError(f"{where} cannot be read: {reason}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise SettingsError(f"{where} is not valid YAML{at}: {problem}") from None
    stores = Stores.open(settings.db_url, migrate=False)
    try:
        return stores.registry.apply(document, source="file")
    except StoreError as exc:
        raise SettingsError(f"{where}: {exc}") from None
    finally:
        stores.close()


def configure(c: Config) -> None:
    """Entry point from ``jupyterhub_config.py``: apply afhub's settings to ``c``."""
    overrides = load_config_file()
    settings = FacilitySettings(config=overrides)
    prepare_home(settings)
    from afhub.stores.migrate import upgrade

    upgrade(settings.db_url)  # the facility database's schema, before anything uses it
    try:
        apply_registry_file(settings)
    except SettingsError as exc:  # one line, like other bad settings; the hub does not start
        print(f"afhub: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    c.merge(build_config(settings, overrides))
