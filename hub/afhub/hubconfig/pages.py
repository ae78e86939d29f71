"""The facility's pages (:mod:`afhub.web`) as a hub-managed service, ``/services/afhub/``,
on JupyterHub OAuth; its pages in the hub's navigation bar; every other afhub service's root
sends a browser to them (``AFHUB_PAGES_PREFIX``).

The OAuth token a person's browser gets for the pages may call the facility API, the
fitting service and Dask Gateway (``oauth_client_allowed_scopes``), no more: the pages act
with the rights of the person looking, through the same REST API as everyone else.
"""

from __future__ import annotations

import json
import sys

from traitlets.config import Config

from afhub.settings import FacilitySettings

#: name of the pages' service (served at ``/services/afhub/``)
PAGES_SERVICE = "afhub"
#: the afhub services whose APIs the pages call, by what the pages call them
CALLED = {"facility": "facility", "fitting": "fitting", "gateway": "dask-gateway"}
#: the pages in the navbar, after the hub's own links
NAV = (("Groups", "groups"), ("My usage", "usage"), ("Resources", "resources"))


def pages_prefix(settings: FacilitySettings) -> str:
    return f"{settings.base_url}services/{PAGES_SERVICE}/"


def _api_urls(settings: FacilitySettings) -> dict[str, str]:
    """Each called service's API, straight at the service (not through the public proxy)."""
    ports = {
        "facility": settings.api_port,
        "fitting": settings.fitting_port,
        "gateway": settings.gateway_proxy_port,
    }
    apis = {"facility": "api/", "fitting": "api/", "gateway": "api/v1/"}
    return {
        key: f"http://127.0.0.1:{ports[key]}{settings.base_url}services/{name}/{apis[key]}"
        for key, name in CALLED.items()
    }


def configure(c: Config, settings: FacilitySettings) -> None:
    """Add the pages' service, its navbar links, and point the roots and join links of the
    services configured before it at the pages. The pages' service may list the hub's
    services (for the Services menu, as the hub's own pages show it)."""
    from afhub.hubconfig import SERVICE_COOKIE_OPTIONS, add_nav_link

    prefix = pages_prefix(settings)
    services = list(c.JupyterHub.get("services", []))
    for service in services:  # their roots and join links lead to the pages
        if service.get("url"):
            service["environment"] = {
                **service.get("environment", {}),
                "AFHUB_PAGES_PREFIX": prefix,
            }
    config = {
        "hub_prefix": f"{settings.base_url}hub/",
        "endpoints": _api_urls(settings),
        "nav": [{"label": label, "url": prefix + page} for label, page in NAV],
    }
    pages = {
        "name": PAGES_SERVICE,
        "url": f"http://127.0.0.1:{settings.pages_port}",
        "command": [sys.executable, "-m", "afhub.web"],
        "environment": {
            "AFHUB_HOME": settings.home,
            "AFHUB_PAGES_CONFIG": json.dumps(config),
            "JUPYTERHUB_COOKIE_OPTIONS": SERVICE_COOKIE_OPTIONS,
        },
        "oauth_no_confirm": True,
        # the navbar links to the pages; the Services menu keeps the other services
        "display": False,
        "oauth_client_allowed_scopes": [
            f"access:services!service={name}" for name in (PAGES_SERVICE, *CALLED.values())
        ],
    }
    c.JupyterHub.services = [*services, pages]
    c.JupyterHub.load_roles = [
        *c.JupyterHub.get("load_roles", []),
        {
            "name": "afhub-pages",
            "services": [PAGES_SERVICE],
            "scopes": ["list:services", "read:services"],
        },
    ]
    for label, page in NAV:
        add_nav_link(c, label, prefix + page)
