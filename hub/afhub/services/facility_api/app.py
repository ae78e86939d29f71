"""Build and run the facility API (a hub-managed JupyterHub service).

Run by the hub as ``python -m afhub.services.facility_api``; it reads the environment a
hub-managed service gets (``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_API_URL``,
``JUPYTERHUB_SERVICE_PREFIX``, ``JUPYTERHUB_SERVICE_URL``, ``JUPYTERHUB_CLIENT_ID``, ...)
and ``AFHUB_DB_URL`` (default ``sqlite:///$AFHUB_HOME/afhub.sqlite``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler
from tornado import web

from afhub.services.facility_api.groups import GroupHandler, GroupsHandler
from afhub.services.facility_api.invitations import (
    GroupInvitationsHandler,
    InvitationHandler,
    JoinPageHandler,
    RedeemHandler,
)
from afhub.services.facility_api.members import MemberHandler, MembersHandler
from afhub.services.facility_api.metrics import MetricsHandler
from afhub.services.facility_api.quotas import QuotaHandler
from afhub.services.facility_api.resources import (
    ProviderHandler,
    ProvidersHandler,
    RegistryDocumentHandler,
    ResourceHandler,
    ResourcesHandler,
)
from afhub.services.facility_api.usage import UsageHandler
from afhub.services.facility_api.users import MeHandler, UserHandler
from afhub.services.kit.handlers import NotFoundHandler, openapi_handler
from afhub.services.kit.lifecycle import run_until_stopped
from afhub.stores.facade import Stores

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
#: a group path inside a URL: anything up to the ``/-/`` separator (group names never
#: contain a segment ``-``); validated by the stores
GROUP = r"(?P<path>[^?#]+?)"


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    """Completes the hub's OAuth login for browser pages (the join link)."""

    @property
    def hub_auth(self):
        return self.settings["hub_auth"]


OpenAPIHandler = openapi_handler(OPENAPI_PATH)


def routes(prefix: str) -> list[tuple]:
    api = prefix + "api/"
    return [
        (api + r"openapi\.yaml", OpenAPIHandler),
        (api + r"users/me", MeHandler),
        (api + r"users/(?P<name>[^/]+)", UserHandler),
        (api + r"groups", GroupsHandler),
        (api + r"groups/" + GROUP + r"/-/members", MembersHandler),
        (api + r"groups/" + GROUP + r"/-/members/(?P<user>[^/]+)", MemberHandler),
        (api + r"groups/" + GROUP + r"/-/quota", QuotaHandler),
        (api + r"groups/" + GROUP + r"/-/usage", UsageHandler),
        (api + r"groups/" + GROUP + r"/-/invitations", GroupInvitationsHandler),
        (api + r"groups/" + GROUP, GroupHandler),
        (api + r"invitations/redeem", RedeemHandler),
        (api + r"invitations/(?P<invitation_id>[A-Za-z0-9]{1,32})", InvitationHandler),
        (api + r"resources", ResourcesHandler),
        (api + r"resources/(?P<name>[^/]+)", ResourceHandler),
        (api + r"providers", ProvidersHandler),
        (api + r"providers/(?P<name>[^/]+)", ProviderHandler),
        (api + r"registry", RegistryDocumentHandler),
        (prefix + r"metrics", MetricsHandler),
        (prefix + r"join/(?P<token>[A-Za-z0-9_-]{10,200})", JoinPageHandler),
        (prefix + r"oauth_callback", OAuthCallbackHandler),
        (prefix + r".*", NotFoundHandler),
    ]


def make_app(
    stores: Stores,
    *,
    prefix: str | None = None,
    hub_auth: HubOAuth | None = None,
    cookie_secret: bytes | None = None,
) -> web.Application:
    """The tornado application. ``prefix`` defaults to ``$JUPYTERHUB_SERVICE_PREFIX``."""
    prefix = prefix or os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/facility/")
    if not prefix.endswith("/"):
        prefix += "/"
    hub_auth = hub_auth or HubOAuth(cache_max_age=60)
    return web.Application(
        routes(prefix),
        afhub_stores=stores,
        afhub_prefix=prefix,
        hub_auth=hub_auth,
        cookie_secret=cookie_secret or os.urandom(32),
        xsrf_cookies=False,
        default_handler_class=NotFoundHandler,
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(name)s] %(message)s")
    stores = Stores.open()
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    app = make_app(stores)
    app.listen(url.port or 80, url.hostname or "127.0.0.1")
    logging.getLogger("afhub.facility_api").info("facility API on %s", url.geturl())
    run_until_stopped("the facility API")
