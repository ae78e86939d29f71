"""Render the pages in the hub's look: a jinja environment over afhub's templates and
JupyterHub's own (the same lookup the hub makes with ``template_paths``), and the
variables JupyterHub's ``page.html`` reads."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader
from jupyterhub._data import DATA_FILES_PATH

from afhub.web import TEMPLATES

#: JupyterHub's templates (``templates/page.html`` in a template names the hub's own)
HUB_TEMPLATES = Path(DATA_FILES_PATH) / "templates"


def environment() -> Environment:
    """Templates found in afhub's folder first, then the hub's; ``templates/<name>`` is
    always the hub's own (what afhub's ``page.html`` extends). Autoescaped: a name with
    HTML in it renders as text."""
    loader = ChoiceLoader(
        [
            PrefixLoader({"templates": FileSystemLoader([str(HUB_TEMPLATES)])}, "/"),
            FileSystemLoader([str(TEMPLATES), str(HUB_TEMPLATES)]),
        ]
    )
    env = Environment(loader=loader, autoescape=True)
    env.filters["when"] = when
    return env


def when(value: object) -> str:
    """An ISO 8601 instant from the API as a person reads it (``2026-12-11 22:23 UTC``);
    anything else as it is."""
    if not isinstance(value, str):
        return "" if value is None else str(value)
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        return value
    if instant.tzinfo is not None:
        instant = instant.astimezone(UTC)
    return instant.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Viewer:
    """The logged-in person as the hub's ``page.html`` reads ``user``."""

    name: str
    admin: bool = False

    @property
    def json_escaped_name(self) -> str:
        # page.html puts it in a JS string literal: JSON without the quotes, '<' escaped
        return json.dumps(self.name)[1:-1].replace("<", "\\u003c")

    @property
    def spawner(self) -> None:  # page.html asks user.spawner.options_form
        return None


@dataclass(frozen=True)
class NavService:
    """A service in the hub's Services menu (``page.html`` reads name and href)."""

    name: str
    href: str


def hub_namespace(
    *,
    base_url: str,
    hub_prefix: str,
    viewer: Viewer | None,
    xsrf: str,
    nav: list[dict[str, str]],
    services: list[NavService],
) -> dict[str, Any]:
    """What JupyterHub's ``page.html`` (and afhub's around it) needs: the hub's URLs, its
    static files, the user, the Services menu and afhub's navbar links."""
    static_root = f"{hub_prefix}static/"

    def static_url(path: str, include_version: bool = True) -> str:  # noqa: ARG001 (the hub's signature)
        return static_root + path

    return {
        "base_url": hub_prefix,
        "prefix": base_url,
        "user": viewer,
        "login_url": f"{hub_prefix}login",
        "logout_url": f"{hub_prefix}logout",
        "static_url": static_url,
        "version_hash": "",
        "services": services if viewer else [],
        # the Admin link is shown where the hub would show it (hub admins)
        "parsed_scopes": {"admin-ui"} if viewer and viewer.admin else set(),
        "xsrf": xsrf,
        "xsrf_token": xsrf,
        "afhub_nav": nav,
    }
