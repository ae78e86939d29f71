"""What every facility API handler shares: identity from the hub, JSON in and out, and
errors as ``{"error": "...", "status": 4xx}`` (never a stack trace)."""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from jupyterhub.services.auth import HubOAuthenticated, UserNotAllowed
from tornado import web
from tornado.ioloop import IOLoop

from afhub.groups.names import InvalidGroupName
from afhub.groups.tree import Actor, PermissionDenied, TreeError
from afhub.quotas.limits import InvalidQuota
from afhub.quotas.periods import InvalidPeriod
from afhub.stores.errors import StoreError
from afhub.stores.facade import Stores

log = logging.getLogger("afhub.facility_api")
T = TypeVar("T")
MAX_BODY_BYTES = 64 * 1024
#: deepest nesting of arrays and objects a JSON body may have (the deepest the API reads is
#: 3: a registry document's resources, a toleration in a resource, its fields)
MAX_BODY_DEPTH = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKETS = re.compile(rb"[\[\]{}]")


#: query parameters that carry credentials: refused, and scrubbed from the access log
URL_CREDENTIALS = frozenset({"token", "access_token", "api_token"})
_SECRET_IN_URI = re.compile(
    r"((?:[?&](?:token|access_token|api_token|code)=)[^&#]*)|(/join/)[A-Za-z0-9_-]+",
    re.IGNORECASE,
)


def scrub_uri(uri: str) -> str:
    """``uri`` with credential parameters' values and invitation tokens of join links
    replaced by ``[secret]`` (for logs)."""

    def hide(match: re.Match) -> str:
        kept = match.group(1) or match.group(2)
        if match.group(1):
            kept = kept[: kept.index("=") + 1]
        return kept + "[secret]"

    return _SECRET_IN_URI.sub(hide, uri)


class ApiError(web.HTTPError):
    """An error with a message for the caller."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, reason=None)
        self.message = message


def _status_of(exc: BaseException) -> tuple[int, str] | None:
    if isinstance(exc, ApiError):
        return exc.status_code, exc.message
    if isinstance(exc, PermissionDenied):
        return 403, str(exc)
    if isinstance(exc, StoreError):
        return exc.status, str(exc)
    if isinstance(exc, (InvalidGroupName, InvalidQuota, InvalidPeriod, TreeError)):
        return 400, str(exc)
    if isinstance(exc, web.HTTPError):
        return exc.status_code, exc.log_message or exc.reason or "request refused"
    return None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text ``raw`` (0 for a scalar).

    One pass over the text with strings blanked out, so its cost is linear in the size of
    the body whatever the nesting (the JSON decoder itself recurses, and fails with a
    RecursionError on a deep enough body)."""
    depth = deepest = 0
    for bracket in _JSON_BRACKETS.findall(_JSON_STRING.sub(b'""', raw)):
        if bracket in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_json_body(
    raw: bytes | None,
    *,
    max_bytes: int = MAX_BODY_BYTES,
    max_depth: int = MAX_BODY_DEPTH,
    required: bool = False,
) -> dict[str, Any]:
    """A request body as a JSON object, within the limits, else :class:`ApiError` (4xx)
    with a message that says what is wrong. The one body parser of the facility API.

    Limits, checked before the body is decoded: ``max_bytes`` (413) and nesting depth
    ``max_depth`` (400). NaN and Infinity are refused (not JSON); an empty body is ``{}``
    unless ``required``."""
    raw = raw or b""
    if not raw.strip():
        if required:
            raise ApiError(400, "a JSON object is required in the request body")
        return {}
    if len(raw) > max_bytes:
        raise ApiError(
            413, f"request body is {len(raw)} bytes, over the limit of {max_bytes} bytes"
        )
    depth = json_depth(raw)
    if depth > max_depth:
        raise ApiError(
            400,
            f"the request body nests arrays and objects {depth} deep; the limit is {max_depth}",
        )
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(
            400, "the request body is not valid JSON (UTF-8; NaN and Infinity are not JSON)"
        ) from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return body


class FacilityHandler(HubOAuthenticated, web.RequestHandler):
    """Base class: ``self.actor`` is the caller, ``self.stores`` the database."""

    #: whether the handler answers without a logged-in user (the OpenAPI document)
    anonymous = False

    @property
    def hub_auth(self):
        return self.settings["hub_auth"]

    @property
    def stores(self) -> Stores:
        return self.settings["afhub_stores"]

    def _request_summary(self) -> str:
        """The access log's request, without credentials (tornado logs the full URI)."""
        uri = scrub_uri(self.request.uri or "")
        return f"{self.request.method} {uri} ({self.request.remote_ip})"

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def max_body_bytes(self) -> int:
        """The largest request body this handler accepts (413 beyond)."""
        return MAX_BODY_BYTES

    async def prepare(self) -> None:
        self.actor: Actor | None = None
        body = self.request.body or b""
        limit = self.max_body_bytes()
        if len(body) > limit:
            raise ApiError(
                413, f"request body is {len(body)} bytes, over the limit of {limit} bytes"
            )
        if any(name.lower() in URL_CREDENTIALS for name in self.request.query_arguments):
            # a link with a token acts as its owner for whoever opens it (issue 11)
            raise ApiError(
                400,
                "tokens in URLs are refused (they end up in logs, browser history and links "
                "sent to others): send 'Authorization: token <JupyterHub API token>'",
            )
        if self.anonymous:
            return
        try:
            model = await self.hub_auth.get_user(self, sync=False)
        except web.HTTPError as exc:
            log.warning("hub could not check a token: %s", exc)
            raise ApiError(502, "the hub could not check the token; try again") from None
        if model:
            try:
                model = self.check_hub_user(model)
            except UserNotAllowed:
                raise ApiError(
                    403, "this token does not grant access to the facility API"
                ) from None
        if not model:
            self.unauthenticated()
            return
        if model.get("kind", "user") != "user":
            raise ApiError(403, "the facility API answers users, not services")
        self.current_user = model
        self.actor = await self.call(
            self.stores.groups.actor, model["name"], hub_admin=bool(model.get("admin"))
        )

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
        raise ApiError(
            401,
            "not authenticated: send 'Authorization: token <JupyterHub API token>' "
            "(the token is missing, invalid or expired)",
        )

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
            known = _status_of(exc_info[1])
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
        if _status_of(value) is not None:
            log.info("%s %s -> %s", self.request.method, self.request.path, value)
            return
        super().log_exception(typ, value, tb)

    def _handle_request_exception(self, e: BaseException) -> None:
        known = _status_of(e)
        if known is not None and not isinstance(e, web.HTTPError):
            # store and permission errors are answers, not crashes
            self.log_exception(type(e), e, e.__traceback__)
            if not self._finished:
                self.send_error(known[0], exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


class NotFoundHandler(FacilityHandler):
    anonymous = True

    def prepare(self):
        raise ApiError(404, "no such API path")


def openapi_handler(document: Path) -> type[FacilityHandler]:
    """A handler serving a service's OpenAPI document (no authentication)."""

    class OpenAPIHandler(FacilityHandler):
        anonymous = True

        def get(self) -> None:
            self.set_header("Content-Type", "application/yaml; charset=utf-8")
            self.finish(document.read_text())

    return OpenAPIHandler
