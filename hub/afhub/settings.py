"""Facility-wide settings: where state lives, which ports, which login.

Every setting is a documented traitlet. Values come, in increasing priority, from the
defaults below, from ``AFHUB_*`` environment variables (what ``make up`` and the helm chart
set), and from the ``FacilitySettings`` section of the afhub YAML config file
(``$AFHUB_CONFIG``, default ``$AFHUB_HOME/afhub.yaml``). ``afhub settings`` prints every
setting with its value and where it came from; docs/settings.md is generated from the help
strings here (``afhub settings --markdown``).

The facility's home is ``$AFHUB_HOME``, else :func:`default_home` (never a folder relative
to where a command runs), and every port derives from ``port_base`` unless set on its own:
two facilities run side by side with two variables, ``AFHUB_HOME`` and ``AFHUB_PORT_BASE``.

The YAML file is a traitlets config keyed by class name, so the same file also configures
the authenticators and spawners::

    FacilitySettings:
      authenticator: cilogon
    AfhubCILogonAuthenticator:
      identity_providers: {...}
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from traitlets import Bool, DefaultHandler, Enum, Integer, TraitError, Unicode, default, validate
from traitlets.config import Config, Configurable

#: the authenticators the facility knows, by the value of ``FacilitySettings.authenticator``
AUTHENTICATORS = {
    "local": "afhub-local",
    "cilogon": "afhub-cilogon",
}


class SettingsError(ValueError):
    """A setting has a value afhub cannot use; the message says which and why."""


class ConfigFileError(SettingsError):
    """The afhub YAML config file cannot be used; the message says why."""


def env_value(name: str, fallback: Any) -> Any:
    """The environment variable ``name``, or ``fallback`` when it is unset or empty."""
    value = os.environ.get(name)
    return fallback if value in (None, "") else value


#: how an environment-backed setting reads its value: ``parse(value, variable name)``
Parse = Callable[[Any, str], Any]


def integer(value: Any, _name: str) -> int:
    return int(value)


def number(value: Any, _name: str) -> float:
    return float(value)


def text(value: Any, _name: str) -> Any:
    return value


def whole(minimum: int = 0) -> Parse:
    """A whole number at least ``minimum``; a :class:`TraitError` naming the variable if not."""

    def parse(value: Any, name: str) -> int:
        try:
            count = int(value)
        except (TypeError, ValueError):
            raise TraitError(f"{name}={value!r} is not a whole number") from None
        if count < minimum:
            raise TraitError(f"{name}={count} must be at least {minimum}")
        return count

    return parse


def port_number(value: Any, name: str, highest: int = 65535) -> int:
    """A TCP port (1 to ``highest``); a :class:`TraitError` naming the variable if not."""
    port = whole(1)(value, name)
    if port > highest:
        raise TraitError(f"{name}={port} must be a port number from 1 to {highest}")
    return port


def flag(value: Any, _name: str) -> bool:
    """``1``/``true``/``yes`` (any case) is true; anything else is false."""
    return str(value).lower() in ("1", "true", "yes")


def yes_or_no(value: Any, name: str) -> bool:
    """``true``/``1``/``yes`` or ``false``/``0``/``no``; a :class:`TraitError` otherwise."""
    value = str(value).strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise TraitError(f"{name}={value!r} must be true or false")
    return value in ("true", "1", "yes")


def from_env(trait: str, env: str, fallback: Any, parse: Parse = text) -> Any:
    """The dynamic default of the setting ``trait``: the environment variable ``env`` when
    set and not empty, else ``fallback`` (``fallback(settings)`` when it is callable: a
    default that depends on another setting), read with ``parse``. In a class body::

        workers = Integer(help="... Env: ``AFHUB_FIT_WORKERS``.").tag(config=True)
        _default_workers = from_env("workers", "AFHUB_FIT_WORKERS", 4, integer)

    Values from the afhub YAML file still win over it (traitlets' order)."""

    def generate(settings: Any) -> Any:
        value = os.environ.get(env)
        if value in (None, ""):
            value = fallback(settings) if callable(fallback) else fallback
        return parse(value, env)

    generate.__name__ = f"_default_{trait}"
    # read by environment_variable() and default_text(): ``afhub settings``, docs/settings.md
    generate.env_variable = env  # type: ignore[attr-defined]
    generate.fallback = fallback  # type: ignore[attr-defined]
    return default(trait)(generate)


def _env_default(cls: type, trait: str) -> Callable[..., Any] | None:
    """The :func:`from_env` default generator of ``cls.trait``, if it has one."""
    for klass in cls.__mro__:
        for value in vars(klass).values():
            if isinstance(value, DefaultHandler) and value.trait_name == trait:
                return value.func if hasattr(value.func, "env_variable") else None
    return None


def environment_variable(cls: type, trait: str) -> str | None:
    """The environment variable that sets ``cls.trait`` (``None``: none does)."""
    generate = _env_default(cls, trait)
    return generate.env_variable if generate else None  # type: ignore[attr-defined]


def default_text(cls: type, trait: str) -> str:
    """The default of ``cls.trait`` as the docs show it: the value, or the first line of the
    docstring of a default computed from other settings (e.g. ``port_base`` + 81)."""
    generate = _env_default(cls, trait)
    value = generate.fallback if generate else cls.class_traits()[trait].default_value  # type: ignore[attr-defined]
    if callable(value):
        return (value.__doc__ or "computed").strip().splitlines()[0]
    return f"``{value}``" if value != "" else "(empty)"


def setting_source(settings: Configurable, trait: str) -> str:
    """Where the value of ``settings.trait`` came from: ``file`` (the afhub YAML file),
    ``environment`` (its variable) or ``default``."""
    section = settings.config.get(type(settings).__name__) or {}
    if trait in section:
        return "file"
    variable = environment_variable(type(settings), trait)
    if variable and os.environ.get(variable, "") != "":
        return "environment"
    return "default"


def default_home(_settings: Any = None) -> str:
    """``.afhub`` in the afhub checkout (where ``make up`` runs), else ``~/.afhub``."""
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").exists():
        return str(checkout / ".afhub")
    return str(Path.home() / ".afhub")


def sqlite_in_home(file: str) -> Callable[[Any], str]:
    """The default of a database URL: SQLite ``file`` in the facility's home."""

    def url(settings: Any) -> str:
        return f"sqlite:///{Path(settings.home) / file}"

    url.__doc__ = f"SQLite: ``{file}`` in ``home``"
    return url


def from_port_base(offset: int) -> Callable[[Any], int]:
    """The default of a port: ``port_base + offset``."""

    def derived(settings: Any) -> int:
        return settings.port_base + offset

    derived.__doc__ = f"``port_base`` + {offset}" if offset else "``port_base``"
    return derived


def _slashed(prefix: str, _name: str = "") -> str:
    """``af``, ``/af``, ``af/`` → ``/af/``; empty → ``/``."""
    value = "/" + prefix.strip("/")
    return value if value == "/" else value + "/"


def _resolved(path: str, _name: str) -> str:
    return str(Path(path).resolve())


def _authenticator(value: str, name: str) -> str:
    if value not in AUTHENTICATORS:
        raise SettingsError(f"{name}={value!r} is not one of: {', '.join(AUTHENTICATORS)}")
    return value


def _installed_proxy(_settings: Any) -> str:
    """The configurable-http-proxy ``make install`` put in the project's
    ``node_modules``, else the one on ``PATH``."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        candidate = base / "node_modules" / ".bin" / "configurable-http-proxy"
        if candidate.exists():
            return str(candidate)
    return "configurable-http-proxy"


class FacilitySettings(Configurable):
    """Settings of the facility as a whole (local mode and Kubernetes mode)."""

    home = Unicode(
        help="""Folder holding all state of a local facility: the databases, the cookie
        secret, the admin password, user homes and logs. Every ``afhub`` command finds its
        facility here, wherever it runs. Env: ``AFHUB_HOME``.""",
    ).tag(config=True)

    _default_home = from_env("home", "AFHUB_HOME", default_home, _resolved)

    @validate("home")
    def _absolute_home(self, proposal: Any) -> str:
        return str(Path(proposal["value"]).expanduser().resolve())

    facility_name = Unicode(
        help="""The facility's name as people know it, on the title page of the providers'
        public reports (``.../contributions/public/<provider>/report.pdf``). Env:
        ``AFHUB_FACILITY_NAME``.""",
    ).tag(config=True)

    _default_facility_name = from_env("facility_name", "AFHUB_FACILITY_NAME", "afhub")

    ip = Unicode(
        help="Address the public proxy listens on. Env: ``AFHUB_IP``.",
    ).tag(config=True)

    _default_ip = from_env("ip", "AFHUB_IP", "127.0.0.1")

    port_base = Integer(
        help="""The first of the facility's ports: each port setting that is not set on its
        own is this plus a fixed offset (``port`` +0, ``proxy_api_port`` +1, ``hub_port``
        +81, ``api_port`` +82, ``fitting_port`` +83, ``gateway_port`` +84,
        ``gateway_proxy_port`` +85, ``pages_port`` +86, ``dashboards_port`` +87). A
        second facility on the same machine needs only its own ``AFHUB_HOME`` and e.g.
        ``AFHUB_PORT_BASE=9000``. Env: ``AFHUB_PORT_BASE``.""",
    ).tag(config=True)

    _default_port_base = from_env(
        "port_base", "AFHUB_PORT_BASE", 8000, lambda value, name: port_number(value, name, 65448)
    )

    port = Integer(
        help="Port of the public proxy (where people log in). Env: ``AFHUB_PORT``.",
    ).tag(config=True)

    _default_port = from_env("port", "AFHUB_PORT", from_port_base(0), port_number)

    base_url = Unicode(
        help="""URL prefix of the whole facility (``/`` or e.g. ``/af/``), for a facility
        served under a path of a larger site. Env: ``AFHUB_BASE_URL``.""",
    ).tag(config=True)

    _default_base_url = from_env("base_url", "AFHUB_BASE_URL", "/", _slashed)

    @validate("base_url")
    def _slashed_base_url(self, proposal: Any) -> str:
        return _slashed(proposal["value"])

    hub_port = Integer(
        help="Port the hub itself listens on, behind the proxy. Env: ``AFHUB_HUB_PORT``.",
    ).tag(config=True)

    _default_hub_port = from_env("hub_port", "AFHUB_HUB_PORT", from_port_base(81), port_number)

    proxy_api_port = Integer(
        help="Port of configurable-http-proxy's REST API. Env: ``AFHUB_PROXY_API_PORT``.",
    ).tag(config=True)

    _default_proxy_api_port = from_env(
        "proxy_api_port", "AFHUB_PROXY_API_PORT", from_port_base(1), port_number
    )

    authenticator = Enum(
        list(AUTHENTICATORS),
        help="""How people log in: ``local`` (per-user passwords managed with
        ``afhub users``; the default) or ``cilogon`` (CILogon/OpenID Connect, for
        production; configure ``AfhubCILogonAuthenticator``). Env: ``AFHUB_AUTHENTICATOR``.""",
    ).tag(config=True)

    _default_authenticator = from_env(
        "authenticator", "AFHUB_AUTHENTICATOR", "local", _authenticator
    )

    hub_db_url = Unicode(
        help="""SQLAlchemy URL of JupyterHub's own database. Default: SQLite in
        ``home``. Env: ``AFHUB_HUB_DB_URL``.""",
    ).tag(config=True)

    _default_hub_db_url = from_env(
        "hub_db_url", "AFHUB_HUB_DB_URL", sqlite_in_home("jupyterhub.sqlite")
    )

    db_url = Unicode(
        help="""SQLAlchemy URL of afhub's facility database (groups, quotas, invitations,
        the usage ledger). Default: SQLite in ``home``; PostgreSQL in production
        (``postgresql+psycopg2://...``). Env: ``AFHUB_DB_URL``.""",
    ).tag(config=True)

    _default_db_url = from_env("db_url", "AFHUB_DB_URL", sqlite_in_home("afhub.sqlite"))

    api_port = Integer(
        help="Port of the facility API service (``/services/facility/``). Env: ``AFHUB_API_PORT``.",
    ).tag(config=True)

    _default_api_port = from_env("api_port", "AFHUB_API_PORT", from_port_base(82), port_number)

    fitting_port = Integer(
        help="Port of the fitting service (``/services/fitting/``). Env: ``AFHUB_FITTING_PORT``.",
    ).tag(config=True)

    _default_fitting_port = from_env(
        "fitting_port", "AFHUB_FITTING_PORT", from_port_base(83), port_number
    )

    pages_port = Integer(
        help="""Port of the facility's pages (``/services/afhub/``: groups, usage, resources,
        the join page). Env: ``AFHUB_PAGES_PORT``.""",
    ).tag(config=True)

    _default_pages_port = from_env(
        "pages_port", "AFHUB_PAGES_PORT", from_port_base(86), port_number
    )

    dashboards_port = Integer(
        help="""Port of the Voila dashboards service (``/services/dashboards/``:
        contributions, fitting, quota). Env: ``AFHUB_DASHBOARDS_PORT``.""",
    ).tag(config=True)

    _default_dashboards_port = from_env(
        "dashboards_port", "AFHUB_DASHBOARDS_PORT", from_port_base(87), port_number
    )

    gateway_port = Integer(
        help="""Port of the Dask Gateway's private API server (only its own proxy talks to
        it). Env: ``AFHUB_GATEWAY_PORT``.""",
    ).tag(config=True)

    _default_gateway_port = from_env(
        "gateway_port", "AFHUB_GATEWAY_PORT", from_port_base(84), port_number
    )
    dashboards_kernel_pool = Integer(
        help="""Kernels the dashboards service keeps started and warmed ahead of page views
        (each serves one page view of one viewer, then a new one is prepared); 0: none,
        every page view waits for a kernel of its own. Env:
        ``AFHUB_DASHBOARDS_KERNEL_POOL``.""",
    ).tag(config=True)

    _default_dashboards_kernel_pool = from_env(
        "dashboards_kernel_pool", "AFHUB_DASHBOARDS_KERNEL_POOL", 2, whole(0)
    )

    gateway_proxy_port = Integer(
        help="""Port of the Dask Gateway's proxy: the gateway's HTTP API and dashboards
        (``/services/dask-gateway/``, behind the hub's proxy) and the TLS connections of
        Dask clients to their schedulers. Env: ``AFHUB_GATEWAY_PROXY_PORT``.""",
    ).tag(config=True)

    _default_gateway_proxy_port = from_env(
        "gateway_proxy_port", "AFHUB_GATEWAY_PROXY_PORT", from_port_base(85), port_number
    )

    dask_idle_timeout = Integer(
        help="""Seconds without work after which a Dask cluster shuts itself down (0: never).
        Env: ``AFHUB_DASK_IDLE_TIMEOUT``.""",
    ).tag(config=True)

    _default_dask_idle_timeout = from_env(
        "dask_idle_timeout", "AFHUB_DASK_IDLE_TIMEOUT", 1800, integer
    )

    default_group = Unicode(
        help="""Group every user who belongs to no group joins at login (created if
        missing), so that their servers have a group to be charged to. Empty: such users
        must be invited into a group before they can start anything. Env:
        ``AFHUB_DEFAULT_GROUP``.""",
    ).tag(config=True)

    _default_default_group = from_env("default_group", "AFHUB_DEFAULT_GROUP", "users")

    checkpoint_interval = Integer(
        help="""Seconds between checkpoints of running ledger intervals (a hub crash loses
        at most this much usage) and between budget checks. Env:
        ``AFHUB_CHECKPOINT_INTERVAL``.""",
    ).tag(config=True)

    _default_checkpoint_interval = from_env(
        "checkpoint_interval", "AFHUB_CHECKPOINT_INTERVAL", 60, integer
    )

    grace_period = Integer(
        help="""Seconds between the warning that a group's budget is spent and stopping
        its servers. Env: ``AFHUB_GRACE_PERIOD``.""",
    ).tag(config=True)

    _default_grace_period = from_env("grace_period", "AFHUB_GRACE_PERIOD", 600, integer)

    # -- idle culling and named servers (afhub.services.culler, docs/culling.md) --

    cull_enabled = Bool(
        help="""Run the idle culler service, which stops servers idle for longer than
        their kind's timeout. Env: ``AFHUB_CULL_ENABLED`` (``true``/``false``).""",
    ).tag(config=True)

    _default_cull_enabled = from_env("cull_enabled", "AFHUB_CULL_ENABLED", "true", yes_or_no)

    cull_timeout_cpu = Integer(
        min=0,
        help="""Seconds a CPU server (and any server whose resource kind is unknown, such
        as the built-in local one) may stay idle before it is stopped; 0: never culled for
        being idle. Env: ``AFHUB_CULL_TIMEOUT_CPU``.""",
    ).tag(config=True)

    _default_cull_timeout_cpu = from_env(
        "cull_timeout_cpu", "AFHUB_CULL_TIMEOUT_CPU", 3600, whole()
    )

    cull_timeout_gpu = Integer(
        min=0,
        help="""Seconds a GPU server may stay idle before it is stopped (shorter than for
        CPU servers: idle GPUs are scarce); 0: never. Env: ``AFHUB_CULL_TIMEOUT_GPU``.""",
    ).tag(config=True)

    _default_cull_timeout_gpu = from_env(
        "cull_timeout_gpu", "AFHUB_CULL_TIMEOUT_GPU", 1200, whole()
    )

    cull_timeout_fpga = Integer(
        min=0,
        help="""Seconds an FPGA server may stay idle before it is stopped; 0: never. Env:
        ``AFHUB_CULL_TIMEOUT_FPGA``.""",
    ).tag(config=True)

    _default_cull_timeout_fpga = from_env(
        "cull_timeout_fpga", "AFHUB_CULL_TIMEOUT_FPGA", 1200, whole()
    )

    cull_every = Integer(
        min=1,
        help="""Seconds between two rounds of the idle culler (at least 1; a server is
        stopped at most this long after its timeout). Env: ``AFHUB_CULL_EVERY``.""",
    ).tag(config=True)

    _default_cull_every = from_env("cull_every", "AFHUB_CULL_EVERY", 60, whole(1))

    cull_max_age = Integer(
        min=0,
        help="""Seconds after its start at which any server is stopped, active or not; 0:
        no maximum age. Env: ``AFHUB_CULL_MAX_AGE``.""",
    ).tag(config=True)

    _default_cull_max_age = from_env("cull_max_age", "AFHUB_CULL_MAX_AGE", 0, whole())

    named_server_limit = Integer(
        min=0,
        help="""Named servers a user may have besides their default server (each one is
        charged and counted in group quotas separately); 0: named servers are off. Env:
        ``AFHUB_NAMED_SERVER_LIMIT``.""",
    ).tag(config=True)

    _default_named_server_limit = from_env(
        "named_server_limit", "AFHUB_NAMED_SERVER_LIMIT", 3, whole()
    )

    registry_file = Unicode(
        help="""Path of the declarative resource registry (YAML: ``providers`` and
        ``resources``, the shape of docs/resources.md, which the helm chart writes). Applied
        at every hub start as the registry's ``file`` entries (entries added through the
        facility API or ``afhub resources`` stay); a bad file stops the start with a message
        naming the entry and the field. Empty: no file. Env: ``AFHUB_REGISTRY``.""",
    ).tag(config=True)

    _default_registry_file = from_env("registry_file", "AFHUB_REGISTRY", "")

    proxy_command = Unicode(
        help="""Path of the configurable-http-proxy executable. Default: the one
        ``make install`` puts in the project's ``node_modules``, else the one on ``PATH``.
        Env: ``AFHUB_PROXY_COMMAND``.""",
    ).tag(config=True)

    _default_proxy_command = from_env("proxy_command", "AFHUB_PROXY_COMMAND", _installed_proxy)

    default_url = Unicode(
        "/lab",
        help="Where a user lands in their server: JupyterLab by default.",
    ).tag(config=True)

    # -- derived paths (not configurable: everything lives under ``home``) --

    @property
    def home_path(self) -> Path:
        return Path(self.home)

    @property
    def logs_path(self) -> Path:
        return self.home_path / "logs"

    @property
    def user_homes_path(self) -> Path:
        return self.home_path / "homes"

    @property
    def admin_password_path(self) -> Path:
        return self.home_path / "admin-password"

    @property
    def cookie_secret_path(self) -> Path:
        return self.home_path / "jupyterhub_cookie_secret"

    @property
    def public_url(self) -> str:
        host = "127.0.0.1" if self.ip in ("", "0.0.0.0") else self.ip  # noqa: S104
        return f"http://{host}:{self.port}{self.base_url}"


def config_file_path() -> Path:
    """Where the afhub YAML config file is: ``$AFHUB_CONFIG`` or ``$AFHUB_HOME/afhub.yaml``."""
    explicit = env_value("AFHUB_CONFIG", "")
    if explicit:
        return Path(explicit)
    return Path(env_value("AFHUB_HOME", default_home())).resolve() / "afhub.yaml"


def load_config_file(path: Path | None = None) -> Config:
    """Read the afhub YAML config file (a traitlets config keyed by class name).

    A missing file is an empty config; a malformed one raises :class:`ConfigFileError`
    naming the file and the problem.
    """
    path = config_file_path() if path is None else path
    if not path.exists():
        return Config()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, dict) for k, v in data.items()
    ):
        raise ConfigFileError(
            f"{path} must map class names (e.g. FacilitySettings) to their settings"
        )
    return Config(data)


def load_settings(config: Config | None = None) -> FacilitySettings:
    """The facility's settings from environment and the afhub YAML config file.

    Raises :class:`SettingsError` with a message naming the bad setting.
    """
    try:
        # values from afhub.yaml are validated in the constructor, environment defaults below
        settings = FacilitySettings(config=load_config_file() if config is None else config)
        for name in settings.trait_names(config=True):
            getattr(settings, name)  # evaluate every default now, not in the middle of a run
    except TraitError as exc:
        raise SettingsError(str(exc)) from None
    return settings
