"""What every facility API handler adds to the service kit's JSON handler: the database
(``self.stores``) and the caller as the group tree sees them (``self.actor``)."""

from __future__ import annotations

import logging
from typing import Any

from afhub.groups.tree import Actor, Role
from afhub.services.kit.errors import ApiError
from afhub.services.kit.handlers import NOT_AUTHENTICATED, JsonHandler
from afhub.stores.facade import Stores


class FacilityHandler(JsonHandler):
    """Base class: ``self.actor`` is the caller, ``self.stores`` the database."""

    service_title = "the facility API"
    service_log = logging.getLogger("afhub.facility_api")

    @property
    def stores(self) -> Stores:
        return self.settings["afhub_stores"]

    async def prepare(self) -> None:
        self.actor: Actor | None = None
        await super().prepare()
        if self.anonymous:
            return
        model = self.current_user
        self.actor = await self.call(
            self.stores.groups.actor, model["name"], hub_admin=bool(model.get("admin"))
        )

    def role_field(self, body: dict[str, Any]) -> Role:
        """The body's ``role`` (default ``member``); 400 naming the roles otherwise."""
        try:
            return Role.parse(self.field(body, "role", str, default="member"))
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None

    def unauthenticated(self) -> None:
        """No (valid) token: 401 for the API; browser pages redirect to the hub login.

        JupyterHub's HubOAuth ignores the OAuth cookie on a request that changes something
        unless it carries the XSRF token, so such a browser request lands here too.
        """
        if self.request.method not in ("GET", "HEAD", "OPTIONS") and self.get_cookie(
            self.hub_auth.cookie_name
        ):
            raise ApiError(
                401,
                "not authenticated: a browser request that changes something needs the XSRF "
                "token in the X-XSRFToken header; API clients send 'Authorization: token ...'",
            )
        raise ApiError(401, NOT_AUTHENTICATED)
