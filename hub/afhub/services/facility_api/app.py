"""Build and run the facility API (a hub-managed JupyterHub service).

Run by the hub as ``python -m afhub.services.facility_api``; it reads the environment a
hub-managed service gets (``JUPYTERHUB_API_TOKEN``, ``JUPYTERHUB_API_URL``,
``JUPYTERHUB_SERVICE_PREFIX``, ``JUPYTERHUB_SERVICE_URL``, ``JUPYTERHUB_CLIENT_ID``, ...)
and ``AFHUB_DB_URL`` (default ``sqlite:///$AFHUB_HOME/afhub.sqlite``).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuth
from tornado import web

from afhub.auth.accounts import has_account
from afhub.services.facility_api.contributions import (
    ContributionProvidersHandler,
    ContributionsHandler,
    PublicContributionsHandler,
    PublicReportPdfHandler,
)
from afhub.services.facility_api.groups import GroupHandler, GroupsHandler
from afhub.services.facility_api.invitations import (
    GroupInvitationsHandler,
    InvitationHandler,
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
from afhub.services.kit.app import service_application, service_prefix, service_routes
from afhub.services.kit.handlers import OAuthCallbackHandler, pages_redirect
from afhub.services.kit.lifecycle import run_until_stopped
from afhub.settings import FacilitySettings, load_config_file
from afhub.stores.facade import Stores

OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
#: a group path inside a URL: anything up to the ``/-/`` separator (group names never
#: contain a segment ``-``); validated by the stores
GROUP = r"(?P<path>[^?#]+?)"


def routes(prefix: str) -> list[tuple]:
    return service_routes(
        prefix,
        OPENAPI_PATH,
        [
            (r"users/me", MeHandler),
            (r"users/(?P<name>[^/]+)", UserHandler),
            (r"groups", GroupsHandler),
            (r"groups/" + GROUP + r"/-/members", MembersHandler),
            (r"groups/" + GROUP + r"/-/members/(?P<user>[^/]+)", MemberHandler),
            (r"groups/" + GROUP + r"/-/quota", QuotaHandler),
            (r"groups/" + GROUP + r"/-/usage", UsageHandler),
            (r"groups/" + GROUP + r"/-/invitations", GroupInvitationsHandler),
            (r"groups/" + GROUP, GroupHandler),
            (r"invitations/redeem", RedeemHandler),
            (r"invitations/(?P<invitation_id>[A-Za-z0-9]{1,32})", InvitationHandler),
            (r"resources", ResourcesHandler),
            (r"resources/(?P<name>[^/]+)", ResourceHandler),
            (r"providers", ProvidersHandler),
            (r"providers/(?P<name>[^/]+)", ProviderHandler),
            (r"registry", RegistryDocumentHandler),
            (r"contributions", ContributionsHandler),
            (r"contributions/providers", ContributionProvidersHandler),
            (r"contributions/public/(?P<provider>[^/]+)", PublicContributionsHandler),
            (r"contributions/public/(?P<provider>[^/]+)/report\.pdf", PublicReportPdfHandler),
        ],
        [
            (r"metrics", MetricsHandler),
            # the facility's pages (afhub.web) have the join page; links sent before it moved
            (r"join/(?P<token>[A-Za-z0-9_-]{10,200})", pages_redirect("join/{token}")),
            (r"", pages_redirect("groups")),
            (r"oauth_callback", OAuthCallbackHandler),
        ],
    )


def make_app(
    stores: Stores,
    *,
    prefix: str | None = None,
    hub_auth: HubOAuth | None = None,
    cookie_secret: bytes | None = None,
    has_account: Callable[[str], bool] | None = None,
    facility_name: str = "afhub",
) -> web.Application:
    """The tornado application. ``prefix`` defaults to ``$JUPYTERHUB_SERVICE_PREFIX``;
    ``has_account(name)`` says whether a person who never logged in has a local account (a
    member may be added by name only when they logged in once or have one);
    ``facility_name`` heads the providers' public reports."""
    prefix = service_prefix(prefix, "/services/facility/")
    return service_application(
        routes(prefix),
        hub_auth=hub_auth,
        cookie_secret=cookie_secret,
        afhub_stores=stores,
        afhub_prefix=prefix,
        afhub_has_account=has_account,
        afhub_facility_name=facility_name,
    )


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(name)s] %(message)s")
    stores = Stores.open()
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    # afhub.yaml (the chart's ConfigMap) where it sets a value, else the environment
    settings = FacilitySettings(config=load_config_file())
    app = make_app(
        stores,
        has_account=functools.partial(has_account, settings.hub_db_url),
        facility_name=settings.facility_name,
    )
    app.listen(url.port or 80, url.hostname or "127.0.0.1")
    logging.getLogger("afhub.facility_api").info("facility API on %s", url.geturl())
    run_until_stopped("the facility API", on_stop=stores.close)
