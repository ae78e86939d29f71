"""The handler every page builds on: the viewer from the hub (``HubOAuth``: anonymous
people go to the hub's login and come back), their token for the services' APIs, pages
and errors rendered in the hub's look, XSRF on every form."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlparse

from jupyterhub.services.auth import HubOAuthenticated
from tornado import web

from afhub.services.kit.bodies import URL_CREDENTIALS
from afhub.services.kit.handlers import ScrubbedRequestLine
from afhub.web.facility import Endpoints, ServiceClient, ServiceRefused
from afhub.web.rendering import Viewer, hub_namespace

log = logging.getLogger("afhub.web")

#: what a browser may load on a page: the hub's static files and this service's (same
#: origin), inline styles of bootstrap's components, nothing else; no framing
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'"
)


class PageHandler(ScrubbedRequestLine, HubOAuthenticated, web.RequestHandler):
    """Base class of the pages: ``self.viewer`` is the person looking (set in
    :meth:`prepare`), :meth:`facility`, :meth:`fitting` and :meth:`gateway` call the
    services with their token."""

    #: whether the page answers without a logged-in person
    anonymous = False

    @property
    def hub_auth(self):
        return self.settings["hub_auth"]

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.set_header("Referrer-Policy", "same-origin")

    async def prepare(self) -> None:
        self.viewer: Viewer | None = None
        if any(name.lower() in URL_CREDENTIALS for name in self.request.query_arguments):
            raise web.HTTPError(400, "tokens in URLs are refused: log in through the hub")
        if self.request.method not in ("GET", "HEAD"):
            # forms change things: the XSRF token of this session, or nothing happens
            self.check_xsrf_cookie()
        if self.anonymous:
            return
        model = await self.hub_auth.get_user(self, sync=False)
        if not model:
            # to the hub's login, and back here after it (HubOAuth keeps next= on this site)
            self.redirect(self.get_login_url())
            raise web.Finish()
        self.viewer = Viewer(model["name"], admin=bool(model.get("admin")))
        self.services_menu = await self.settings["afhub_services_menu"].items(self.hub_auth)

    # --- the services, as the viewer ---------------------------------------------------------

    @property
    def endpoints(self) -> Endpoints:
        return self.settings["afhub_endpoints"]

    def _client(self, base: str, what: str) -> ServiceClient:
        return ServiceClient(base, self.hub_auth.get_token(self) or "", what)

    def facility(self) -> ServiceClient:
        return self._client(self.endpoints.facility, "the facility API")

    def fitting(self) -> ServiceClient:
        return self._client(self.endpoints.fitting, "the fitting service")

    def gateway(self) -> ServiceClient:
        return self._client(self.endpoints.gateway, "Dask Gateway")

    # --- output ------------------------------------------------------------------------------

    def page_url(self, path: str = "") -> str:
        return self.settings["afhub_prefix"] + path

    def namespace(self) -> dict[str, Any]:
        settings = self.settings
        return {
            **hub_namespace(
                base_url=settings["afhub_base_url"],
                hub_prefix=settings["afhub_hub_prefix"],
                viewer=self.viewer,
                xsrf=self.xsrf_token.decode("ascii"),
                nav=settings["afhub_nav"],
                services=getattr(self, "services_menu", []),
            ),
            "page_url": self.page_url,
            "static": lambda path: self.page_url("static/" + path),
        }

    def render_page(self, template: str, status: int = 200, **values: Any) -> None:
        self.set_status(status)
        page = self.settings["afhub_jinja"].get_template(template)
        self.finish(page.render(**self.namespace(), **values))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error in the hub's look: the status and a message a person can act on,
        never a stack trace."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = "something went wrong on our side; the facility operators have the details"
        if isinstance(exc, ServiceRefused):
            status_code, message = exc.status, exc.message
        elif isinstance(exc, web.HTTPError) and status_code < 500:
            message = exc.log_message or exc.reason or "the request was refused"
        if status_code == 404 and not isinstance(exc, ServiceRefused):
            message = "there is no such page"
        self.set_status(status_code)
        self.clear_header("Location")
        try:
            self.render_page(
                "afhub/error.html", status_code, status_code=status_code, message=message
            )
        except Exception:  # the error page itself failed: plain text, still no trace
            log.exception("error page failed")
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(f"{status_code}: {message}")

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, ServiceRefused):
            log.info("%s -> %s %s", self._request_summary(), value.status, value.message)
            return
        super().log_exception(typ, value, tb)

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, ServiceRefused):
            self.log_exception(type(e), e, e.__traceback__)
            if not self._finished:
                self.send_error(e.status, exc_info=(type(e), e, e.__traceback__))
            return
        super()._handle_request_exception(e)


def same_site_path(next_url: str | None, default: str) -> str:
    """``next_url`` when it is a path on this site (``/...``, never ``//host`` or a scheme),
    else ``default``."""
    if not next_url:
        return default
    parsed = urlparse(next_url)
    if parsed.scheme or parsed.netloc or not next_url.startswith("/") or next_url.startswith("//"):
        return default
    if "\\" in next_url:
        return default
    return next_url


class NotFoundPage(PageHandler):
    """Any path the pages do not have: 404 in the hub's look."""

    anonymous = True

    async def prepare(self) -> None:
        await super().prepare()
        raise web.HTTPError(404)


class HealthHandler(web.RequestHandler):
    """``/health``: 200 once the pages answer (for the facility's readiness)."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("ok")
