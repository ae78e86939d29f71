"""The hub's Services menu on the pages: the services with a URL that the hub lists
(``display`` true), read once from the hub's REST API with the pages' own token (scopes
``list:services`` and ``read:services`` only: the list the hub's own pages show every user)."""

from __future__ import annotations

import json
import logging

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from afhub.web.rendering import NavService

log = logging.getLogger("afhub.web")


class ServicesMenu:
    """The menu, fetched on first use and kept; an empty menu (tried again next time)
    while the hub does not answer."""

    def __init__(self) -> None:
        self._items: list[NavService] | None = None

    async def items(self, hub_auth) -> list[NavService]:
        if self._items is None:
            try:
                response = await AsyncHTTPClient().fetch(
                    hub_auth.api_url.rstrip("/") + "/services",
                    headers={"Authorization": f"token {hub_auth.api_token}"},
                    request_timeout=10,
                )
            except (HTTPClientError, OSError) as exc:
                log.warning("the hub's list of services is not available: %s", exc)
                return []
            self._items = menu_of(json.loads(response.body))
        return self._items


def menu_of(services: dict) -> list[NavService]:
    """The menu's entries from the hub's ``GET /services`` answer, by name."""
    return [
        NavService(name, model["prefix"])
        for name, model in sorted(services.items())
        if model.get("url") and model.get("display", True) and model.get("prefix")
    ]
