"""Build and run the facility's pages (a hub-managed JupyterHub service on OAuth).

Run by the hub as ``python -m afhub.web`` (configured by :mod:`afhub.hubconfig.pages`); it
reads the environment a hub-managed service gets (``JUPYTERHUB_API_TOKEN``,
``JUPYTERHUB_SERVICE_PREFIX``, ``JUPYTERHUB_SERVICE_URL``, ``JUPYTERHUB_BASE_URL``, ...) and
``AFHUB_PAGES_CONFIG``: where the services' APIs are and the navbar links (JSON, written by
:func:`afhub.hubconfig.pages.configure`).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth
from tornado import web

from afhub.services.kit.handlers import OAuthCallbackHandler
from afhub.services.kit.lifecycle import run_until_stopped
from afhub.web import STATIC
from afhub.web.base import HealthHandler, NotFoundPage
from afhub.web.facility import Endpoints
from afhub.web.groups import GroupPage, GroupsPage
from afhub.web.join import JoinPage
from afhub.web.menu import ServicesMenu
from afhub.web.rendering import environment
from afhub.web.resources import ResourcesPage
from afhub.web.usage import UsagePage

#: a group path in a page's URL (validated by the facility API)
GROUP = r"(?P<path>[^?#]+?)"


class HomeRedirect(web.RequestHandler):
    """The service's root: the Groups page."""

    def get(self) -> None:
        self.redirect(self.settings["afhub_prefix"] + "groups")


def routes(prefix: str) -> list[tuple]:
    return [
        (prefix, HomeRedirect),
        (prefix + "health", HealthHandler),
        (prefix + "groups/?", GroupsPage),
        (prefix + "groups/" + GROUP + "/?", GroupPage),
        (prefix + "usage/?", UsagePage),
        (prefix + "resources/?", ResourcesPage),
        (prefix + r"join/(?P<token>[A-Za-z0-9_-]{10,200})", JoinPage),
        (prefix + "oauth_callback", OAuthCallbackHandler),
        (prefix + r"static/(.*)", web.StaticFileHandler, {"path": str(STATIC)}),
        (prefix + r".*", NotFoundPage),
    ]


def make_app(
    config: dict[str, Any],
    *,
    prefix: str | None = None,
    hub_auth: HubOAuth | None = None,
) -> web.Application:
    """The tornado application. ``config`` is what :func:`afhub.hubconfig.pages.configure`
    writes into ``AFHUB_PAGES_CONFIG``; ``prefix`` defaults to ``$JUPYTERHUB_SERVICE_PREFIX``."""
    prefix = prefix or os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/afhub/")
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    base_url = os.environ.get("JUPYTERHUB_BASE_URL", "/")
    return web.Application(
        routes(prefix),
        hub_auth=hub_auth or HubOAuth(cache_max_age=60),
        cookie_secret=os.urandom(32),
        default_handler_class=NotFoundPage,
        static_hash_cache=False,
        afhub_prefix=prefix,
        afhub_base_url=base_url,
        afhub_hub_prefix=config.get("hub_prefix", base_url + "hub/"),
        afhub_endpoints=Endpoints(**config["endpoints"]),
        afhub_nav=config.get("nav", []),
        afhub_services_menu=ServicesMenu(),
        afhub_jinja=environment(),
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(name)s] %(message)s")
    config = json.loads(os.environ["AFHUB_PAGES_CONFIG"])
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8086"))
    app = make_app(config)
    app.listen(url.port or 80, url.hostname or "127.0.0.1", xheaders=False)
    logging.getLogger("afhub.web").info("the facility's pages on %s", url.geturl())
    run_until_stopped("the facility's pages")
