"""The handlers every hub service builds on: identity from the hub through ``HubOAuth``,
JSON in and out, and errors as ``{"error": "...", "status": 4xx}`` (never a stack trace)."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated, UserNotAllowed
from tornado import web
from tornado.ioloop import IOLoop

from afhub.services.kit.bodies import (
    MAX_BODY_BYTES,
    URL_CREDENTIALS,
    parse_json_body,
    scrub_uri,
    too_large,
)
from afhub.services.kit.errors import ApiError, status_of

T = TypeVar("T")
#: the 401 of a request without a (valid) token
NOT_AUTHENTICATED = (
    "not authenticated: send 'Authorization: token <JupyterHub API token>' "
    "(the token is missing, invalid or expired)"
)


class ScrubbedRequestLine:
    """For a tornado handler: the request as its access-log and error lines show it, with
    credentials replaced by ``[secret]`` (tornado shows the full URI: a token in a URL, the
    one-time ``?code=`` of an OAuth callback, an invitation's join link)."""

    request: Any

    def _request_summary(self) -> str:
        uri = scrub_uri(self.request.uri or "")
        return f"{self.request.method} {uri} ({self.request.remote_ip})"


class OAuthCallbackHandler(ScrubbedRequestLine, HubOAuthCallbackHandler):
    """Completes the hub's OAuth login of a browser and goes back to the page it asked for
    (JupyterHub's handler, with the application's ``HubOAuth`` and a request line without
    the code)."""

    @property
    def hub_auth(self):
        return self.settings["hub_auth"]


class JsonHandler(ScrubbedRequestLine, HubOAuthenticated, web.RequestHandler):
    """Base class of a hub service's handlers: ``self.current_user`` is the caller (a hub
    user's model), set in :meth:`prepare` unless the handler is :attr:`anonymous`."""

    #: whether the handler answers without a logged-in user (the OpenAPI document)
    anonymous = False
    #: the service as its refusals name it
    service_title = "the service"
    #: where the service logs refusals and crashes
    service_log = logging.getLogger("afhub.services")

    @property
    def hub_auth(self):
        return self.settings["hub_auth"]

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def max_body_bytes(self) -> int:
        """The largest request body this handler accepts (413 beyond)."""
        return MAX_BODY_BYTES

    async def prepare(self) -> None:
        body = self.request.body or b""
        limit = self.max_body_bytes()
        if len(body) > limit:
            raise too_large(len(body), limit)
        if any(name.lower() in URL_CREDENTIALS for name in self.request.query_arguments):
            # a link with a token acts as its owner for whoever opens it (issue 11)
            raise ApiError(
                400,
                "tokens in URLs are refused (they end up in logs, browser history and links "
                "sent to others): send 'Authorization: token <JupyterHub API token>'",
            )
        if self.anonymous:
            return
        self.current_user = await self.hub_user()

    async def hub_user(self) -> dict[str, Any]:
        """The caller's hub user model, checked by the hub; 401/403/502 otherwise."""
        try:
            model = await self.hub_auth.get_user(self, sync=False)
        except web.HTTPError as exc:
            self.service_log.warning("hub could not check a token: %s", exc)
            raise ApiError(502, "the hub could not check the token; try again") from None
        if model:
            try:
                model = self.check_hub_user(model)
            except UserNotAllowed:
                raise ApiError(
                    403, f"this token does not grant access to {self.service_title}"
                ) from None
        if not model:
            self.unauthenticated()
            raise ApiError(401, NOT_AUTHENTICATED)
        if model.get("kind", "user") != "user":
            raise ApiError(403, f"{self.service_title} answers users, not services")
        return model

    def unauthenticated(self) -> None:
        """No (valid) token: 401 with what to send."""
        raise ApiError(401, NOT_AUTHENTICATED)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a (blocking) store call off the event loop."""
        return await IOLoop.current().run_in_executor(None, functools.partial(fn, *args, **kwargs))

    # --- input ------------------------------------------------------------------------------

    def json_body(self, *, required: bool = False) -> dict[str, Any]:
        """The body as a JSON object within the limits (:func:`parse_json_body`)."""
        return parse_json_body(
            self.request.body, max_bytes=self.max_body_bytes(), required=required
        )

    @staticmethod
    def field(
        body: dict[str, Any],
        name: str,
        kind: type | tuple[type, ...],
        *,
        required: bool = False,
        default: Any = None,
    ) -> Any:
        if name not in body or body[name] is None:
            if required:
                raise ApiError(400, f"field {name!r} is required")
            return default
        value = body[name]
        if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
            raise ApiError(400, f"field {name!r} has the wrong type")
        if not isinstance(value, kind):
            raise ApiError(400, f"field {name!r} has the wrong type")
        return value

    def instant_argument(self, name: str, default: datetime | None = None) -> datetime | None:
        raw = self.get_query_argument(name, None)
        if raw is None or raw == "":
            return default
        try:
            at = datetime.fromisoformat(raw)
        except ValueError:
            raise ApiError(
                400, f"{name} must be a date such as 2026-11-01 or 2026-11-01T08:00"
            ) from None
        return at if at.tzinfo else at.replace(tzinfo=UTC)

    def bool_argument(self, name: str) -> bool:
        raw = self.get_query_argument(name, "false").lower()
        if raw in ("1", "true", "yes"):
            return True
        if raw in ("0", "false", "no", ""):
            return False
        raise ApiError(400, f"{name} must be true or false")

    # --- output -----------------------------------------------------------------------------

    def send(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(payload))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = "internal error; the facility operators have the details in the log"
        exc_info = kwargs.get("exc_info")
        if exc_info:
            known = status_of(exc_info[1])
            if known is not None:
                status_code, message = known
                self.set_status(status_code)
        elif status_code == 405:
            message = f"method {self.request.method} is not allowed here"
        elif status_code == 404:
            message = "no such API path"
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'token realm="afhub"')
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps({"error": message, "status": status_code}))

    def log_exception(self, typ, value, tb) -> None:
        if status_of(value) is not None:
            self.service_log.info("%s %s -> %s", self.request.method, self.request.path, value)
            return
        super().log_exception(typ, value, tb)

    def _handle_request_exception(self, e: BaseException) -> None:
        known = status_of(e)
        if known is not None and not isinstance(e, web.HTTPError):
            # store and permission errors are answers, not crashes
            self.log_exception(type(e), e, e.__traceback__)
            if not self._finished:
                self.send_error(known[0], exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


class NotFoundHandler(JsonHandler):
    """Any path the service does not have: 404 with a message."""

    anonymous = True

    def prepare(self):
        raise ApiError(404, "no such API path")


def openapi_handler(document: Path) -> type[JsonHandler]:
    """A handler serving a service's OpenAPI document (no authentication)."""

    class OpenAPIHandler(JsonHandler):
        anonymous = True

        def get(self) -> None:
            self.set_header("Content-Type", "application/yaml; charset=utf-8")
            self.finish(document.read_text())

    return OpenAPIHandler


def pages_redirect(page: str) -> type[JsonHandler]:
    """A browser opening this service's ``page``-less URL (its root, an old join link)
    lands on the facility's page ``page`` (a format string of the route's arguments) under
    ``$AFHUB_PAGES_PREFIX``, set by the hub's configuration; 404 where there are no pages."""

    class PagesRedirect(JsonHandler):
        anonymous = True

        def get(self, **arguments: str) -> None:
            pages = os.environ.get("AFHUB_PAGES_PREFIX")
            if not pages:
                raise ApiError(404, "no such API path")
            self.redirect(pages + page.format(**arguments))

    return PagesRedirect
