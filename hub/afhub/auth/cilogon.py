"""CILogon login for afhub.

:class:`AfhubCILogonAuthenticator` is oauthenticator's ``CILogonOAuthenticator`` with
afhub's policy on top:

* ``identity_providers`` is the one place that lists the identity providers (IdPs) a user
  may come from, how each one's users are named and which of them may log in.
  oauthenticator's ``idps`` is derived from it.
* The policy is checked at start-up so that two different people can never end up in one
  hub account: at most one "home" IdP keeps bare usernames, every other IdP gets its own
  prefix (``prefix:name``), a domain is stripped only when it is the IdP's own, and the
  derived names are normalised and validated.  A configuration that could merge accounts
  refuses to start.
* Group claims (``isMemberOf`` by default) are normalised and mapped to JupyterHub groups
  (``manage_groups`` is on), which ``admin_groups`` and ``allowed_groups`` then use.
* The client secret may come from a file (a mounted Kubernetes secret).

The policy lives in plain functions (:mod:`afhub.auth.idp_policy`,
:mod:`afhub.auth.group_claims`) so it can be tested without a hub; the redirect guard of
the login handlers is :mod:`afhub.auth.redirects`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from oauthenticator.cilogon import CILogonOAuthenticator
from tornado import web
from traitlets import Bool, Dict, List, Unicode, default

from afhub.auth.group_claims import check_group_name, map_groups, normalize_group_claim
from afhub.auth.idp_policy import (
    IdpPolicy,
    PolicyError,
    UsernameError,
    build_idps,
    derive_username,
    email_domain_allowed,
    parse_identity_providers,
)
from afhub.auth.redirects import AfhubCILogonCallbackHandler, AfhubCILogonLoginHandler


class AfhubCILogonAuthenticator(CILogonOAuthenticator):
    """CILogon login with afhub's per-IdP policy, group mapping and secret file.

    Configure ``identity_providers`` (not ``idps``, which is derived from it).
    """

    login_handler = AfhubCILogonLoginHandler
    callback_handler = AfhubCILogonCallbackHandler

    identity_providers = Dict(
        help="""
        The identity providers users may log in with, by CILogon entity id, and how each
        one's users are named and allowed in.  Each entry may set:

        - ``name``: display name (default: the entity id);
        - ``username_claim``: the claim that names the user (default ``eppn``);
        - ``prefix``: usernames become ``<prefix>:<name>``. At most one IdP (the home IdP)
          may omit it; prefixes must be distinct;
        - ``strip_domain``: the IdP's own domain (that of its entity id) to strip from
          the claim (``alice@a.edu`` -> ``alice``); values in any other domain are refused;
        - ``allowed_email_domains``: users whose ``email`` claim is in one of these
          domains (``a.edu``, or ``*.a.edu`` for subdomains) may log in; defaults to
          ``allowed_email_domains`` below;
        - ``allow_all``: every user of this IdP may log in (default false);
        - ``default``: pre-select this IdP on CILogon's page (default: the home IdP).

        A user of an IdP not listed here is refused (403) whatever their email domain.
        A policy under which two IdPs could give the same username refuses to start.

        Example::

            c.AfhubCILogonAuthenticator.identity_providers = {
                "https://idp.a.edu/idp/shibboleth": {
                    "name": "University A",
                    "username_claim": "eppn",
                    "strip_domain": "a.edu",
                    "allowed_email_domains": ["a.edu"],
                },
                "http://github.com/login/oauth/authorize": {
                    "name": "GitHub",
                    "username_claim": "preferred_username",
                    "prefix": "github",
                },
            }
        """,
    ).tag(config=True)

    allowed_email_domains = List(
        Unicode(),
        help="""
        Email domains allowed for IdPs in ``identity_providers`` that set no
        ``allowed_email_domains`` of their own.  Never admits a user of an IdP that is not
        listed.  ``a.edu`` matches that domain, ``*.a.edu`` its subdomains.
        """,
    ).tag(config=True)

    group_claim = Unicode(
        "isMemberOf",
        help="""
        The userinfo claim that lists the user's groups.  A list or a comma-separated
        string.  Its values become JupyterHub groups through ``group_map``,
        ``group_prefixes`` and ``keep_unmapped_groups``; every other value is dropped.
        """,
    ).tag(config=True)

    group_map = Dict(
        value_trait=Unicode(),
        key_trait=Unicode(),
        help="""
        Claim value -> JupyterHub group name, e.g.
        ``{"CO:COU:atlas-af:members:active": "atlas"}``.  Checked before
        ``group_prefixes``.  Group names are afhub group paths (``atlas/higgs``).
        """,
    ).tag(config=True)

    group_prefixes = List(
        Unicode(),
        help="""
        Claim values starting with one of these prefixes become the group named by the
        rest of the value, e.g. ``["CO:COU:afhub-"]`` maps ``CO:COU:afhub-physics`` to
        ``physics``.
        """,
    ).tag(config=True)

    keep_unmapped_groups = Bool(
        False,
        help="""
        Keep claim values that neither ``group_map`` nor ``group_prefixes`` match, as
        groups of the same name (values that are not valid afhub group paths are still
        dropped).  Off by default: an IdP's whole group list is rarely what the hub's
        groups should be.
        """,
    ).tag(config=True)

    client_secret_file = Unicode(
        "",
        help="""
        Read the OAuth client secret from this file (surrounding whitespace removed), e.g.
        a mounted Kubernetes secret.  Without it, the secret comes from ``client_secret``
        or the environment (``CILOGON_CLIENT_SECRET`` or ``OAUTH_CLIENT_SECRET``).
        """,
    ).tag(config=True)

    @default("manage_groups")
    def _manage_groups_default(self):
        return True

    @default("any_allow_config")
    def _any_allow_config_default(self):
        # JupyterHub warns at start when nothing seems to allow anyone; IdP policies do.
        policies = getattr(self, "policies", {})
        if any(p.allow_all or p.allowed_email_domains for p in policies.values()):
            return True
        return super()._default_any_allowed()

    def _client_secret_default(self):
        if self.client_secret_file:
            path = Path(self.client_secret_file)
            try:
                secret = path.read_text().strip()
            except OSError as e:
                raise ValueError(f"cannot read client_secret_file {path}: {e}") from e
            if not secret:
                raise ValueError(f"client_secret_file {path} is empty")
            return secret
        return super()._client_secret_default()

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        name = type(self).__name__
        if self.trait_has_value("idps"):
            raise PolicyError(
                f"Configure {name}.identity_providers, not idps (nor allowed_idps): "
                "afhub derives idps from it after checking that accounts cannot merge"
            )
        if self.username_map:
            raise PolicyError(
                f"{name} does not accept username_map: mapping names could put two people "
                "in one account"
            )
        self.policies = parse_identity_providers(
            self.identity_providers, self.allowed_email_domains
        )
        self.idps = build_idps(self.policies)
        for claim, group in self.group_map.items():
            check_group_name(group, f"group_map[{claim!r}]")
        for group in self.admin_groups | self.allowed_groups:
            check_group_name(group, "admin_groups/allowed_groups")
        if not self.client_id:
            raise ValueError(
                f"{name}: no client id; set {name}.client_id or the environment variable "
                "CILOGON_CLIENT_ID or OAUTH_CLIENT_ID"
            )
        if self.client_secret_file and self.trait_has_value("client_secret"):
            raise ValueError(f"{name}: set client_secret or client_secret_file, not both")
        if not self.client_secret:
            raise ValueError(
                f"{name}: no client secret; set {name}.client_secret_file or the "
                "environment variable CILOGON_CLIENT_SECRET or OAUTH_CLIENT_SECRET"
            )

    def _policy_for(self, user_info: Mapping[str, object]) -> IdpPolicy:
        idp = user_info.get("idp")
        if not isinstance(idp, str) or not idp:
            raise web.HTTPError(403, "CILogon did not say which identity provider you used")
        policy = self.policies.get(idp)
        if policy is None:
            self.log.warning("Refusing login through unlisted identity provider %r", idp)
            raise web.HTTPError(403, f"Login with identity provider {idp} is not allowed here")
        return policy

    def user_info_to_username(self, user_info):
        """The hub username under afhub's policy; 403 when it cannot be derived."""
        policy = self._policy_for(user_info)
        try:
            return derive_username(policy, user_info)
        except UsernameError as e:
            self.log.warning("Refusing CILogon login: %s", e)
            raise web.HTTPError(403, str(e)) from e

    async def get_user_groups(self, auth_state):
        """Hub groups from the group claim, through ``group_map``/``group_prefixes``."""
        user_info = auth_state.get(self.user_auth_state_key) or {}
        claims = normalize_group_claim(user_info.get(self.group_claim))
        return map_groups(claims, self.group_map, self.group_prefixes, self.keep_unmapped_groups)

    async def check_allowed(self, username, auth_model):
        """Allow a user of a listed IdP when the IdP allows all, their email domain is
        allowed for that IdP, or JupyterHub's own lists (``allowed_users``, ``admin_users``,
        ``allowed_groups``) admit them.  A user of an unlisted IdP is always refused."""
        if auth_model is None:
            # JupyterHub >= 5 always passes the login's model; without one, nothing shows
            # which IdP vouched for the user (oauthenticator allows here, for JupyterHub < 5).
            return False
        user_info = auth_model["auth_state"][self.user_auth_state_key]
        policy = self._policy_for(user_info)
        # OAuthenticator's checks only: allow_all, admin, allowed_users, allowed_groups
        if await super(CILogonOAuthenticator, self).check_allowed(username, auth_model):
            return True
        if policy.allow_all:
            return True
        return email_domain_allowed(user_info.get("email"), policy.allowed_email_domains)
