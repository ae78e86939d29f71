"""The post-login redirect guard: ``next`` must be a plain path under the hub.

oauthenticator's login and callback handlers, with afhub's check of ``next`` on top
(:func:`_same_site_path`), so that a login never sends a browser off site.
"""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from oauthenticator.cilogon import CILogonLoginHandler
from oauthenticator.oauth2 import OAuthCallbackHandler


def _same_site_path(url: str | None, base_url: str) -> str | None:
    """``url`` if it is a plain path under ``base_url``, else None.

    Refused: a scheme or host, a leading ``//``, backslashes, control characters, and dot
    segments (also percent-encoded), which could resolve outside ``base_url``.
    """
    if not url:
        return None
    if "\\" in url or any(ch in url for ch in "\t\r\n"):
        return None
    parsed = urlparse(url)
    if parsed.scheme or parsed.netloc or url.startswith("//"):
        return None
    if not parsed.path.startswith(base_url if base_url.endswith("/") else base_url + "/"):
        return None
    # "/af/../x" (or "/af/%2e%2e/x", which browsers also resolve) leaves the prefix
    if any(segment in (".", "..") for segment in unquote(parsed.path).split("/")):
        return None
    return url


class AfhubCILogonLoginHandler(CILogonLoginHandler):
    """oauthenticator's login handler; ``next`` must also be a path under the hub."""

    def _get_next_url(self):
        next_url = super()._get_next_url()
        if next_url:
            # JupyterHub's own check, then afhub's: stay under the hub's base URL.
            next_url = _same_site_path(self._validate_next_url(next_url), self.base_url)
        return next_url


class AfhubCILogonCallbackHandler(OAuthCallbackHandler):
    """oauthenticator's callback handler; re-checks ``next`` before redirecting."""

    def get_next_url(self, user=None):
        next_url = super().get_next_url(user)
        if _same_site_path(next_url, self.base_url) is None:
            self.log.warning("Refusing post-login redirect to %r", next_url)
            return self.hub.base_url + "home"
        return next_url
