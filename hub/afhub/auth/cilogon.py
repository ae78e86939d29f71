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

The policy logic lives in plain functions (``parse_identity_providers``,
``derive_username``, ``normalize_group_claim``, ``map_groups``, ...) so it can be tested
without a hub.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from oauthenticator.cilogon import CILogonLoginHandler, CILogonOAuthenticator
from oauthenticator.oauth2 import OAuthCallbackHandler
from tornado import web
from traitlets import Bool, Dict, List, Unicode, default

from afhub.groups.names import InvalidGroupName, validate_path

#: Separator between an IdP's prefix and the user's name, as in oauthenticator.  It may
#: appear neither in a prefix nor in a derived name, which is what keeps IdPs apart.
PREFIX_SEPARATOR = ":"

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_DOMAIN_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# The last label (top-level domain) starts with a letter, so IP addresses are not domains.
_DOMAIN_RE = re.compile(rf"^(?:{_DOMAIN_LABEL}\.)+[a-z][a-z0-9-]{{0,61}}[a-z0-9]$")
# A name after a domain was stripped: no "@" left, no separator.
_LOCAL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._+-]*$")
# A name kept whole (e.g. an eppn or email without stripping): one "@" allowed.
_FULL_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._+-]*(?:@[a-z0-9][a-z0-9.-]*)?$")
_MAX_USERNAME = 128

_IDP_KEYS = {
    "name",
    "username_claim",
    "prefix",
    "strip_domain",
    "allowed_email_domains",
    "allow_all",
    "default",
}


class PolicyError(ValueError):
    """The identity-provider policy is invalid or could merge accounts."""


class UsernameError(ValueError):
    """A user's claims cannot be turned into a hub username under the policy."""


@dataclass(frozen=True)
class IdpPolicy:
    """afhub's policy for one identity provider (one entry of ``identity_providers``)."""

    entity_id: str
    name: str
    username_claim: str = "eppn"
    prefix: str | None = None
    strip_domain: str | None = None
    allowed_email_domains: tuple[str, ...] = ()
    allow_all: bool = False
    default: bool = False


def entity_id_domain(entity_id: str) -> str | None:
    """The DNS name an IdP's entity id belongs to, or None when it names none.

    ``https://idp.a.edu/idp/shibboleth`` -> ``idp.a.edu``;
    ``urn:mace:incommon:uchicago.edu`` -> ``uchicago.edu``.
    """
    parsed = urlparse(entity_id)
    if parsed.scheme in ("http", "https"):
        host = (parsed.hostname or "").lower()
        return host if _DOMAIN_RE.match(host) else None
    if parsed.scheme == "urn":
        last = entity_id.rsplit(":", 1)[-1].lower()
        return last if _DOMAIN_RE.match(last) else None
    return None


def _domain_belongs_to(domain: str, host: str) -> bool:
    """True if ``host`` is ``domain`` or one of its subdomains."""
    return host == domain or host.endswith("." + domain)


def _check_domain_pattern(pattern: object, where: str) -> str:
    """Validate an allowed-email-domain entry: ``a.edu`` or ``*.a.edu`` (subdomains)."""
    if not isinstance(pattern, str):
        raise PolicyError(f"{where}: email domain {pattern!r} must be a string")
    value = pattern.strip().lower()
    bare = value[2:] if value.startswith("*.") else value
    if not _DOMAIN_RE.match(bare):
        raise PolicyError(
            f"{where}: email domain {pattern!r} must be a domain such as 'a.edu', "
            "or '*.a.edu' for its subdomains"
        )
    return value


def parse_idp_policy(
    entity_id: str, raw: Mapping[str, object], default_email_domains: Iterable[str] = ()
) -> IdpPolicy:
    """Validate one ``identity_providers`` entry and return its :class:`IdpPolicy`.

    ``default_email_domains`` (afhub's global ``allowed_email_domains``) is used when the
    entry sets no ``allowed_email_domains`` of its own.
    """
    where = f"identity_providers[{entity_id!r}]"
    if urlparse(entity_id).scheme not in ("http", "https", "urn"):
        raise PolicyError(
            f"{where}: keys must be CILogon entity ids (http, https or urn), "
            "see https://cilogon.org/idplist"
        )
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: must be a mapping, got {type(raw).__name__}")
    unknown = set(raw) - _IDP_KEYS
    if unknown:
        raise PolicyError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_IDP_KEYS)}")

    name = raw.get("name") or entity_id
    claim = raw.get("username_claim", "eppn")
    if not isinstance(claim, str) or not claim:
        raise PolicyError(f"{where}: username_claim must be a non-empty string")

    prefix = raw.get("prefix")
    if prefix is not None and not (isinstance(prefix, str) and _PREFIX_RE.match(prefix)):
        raise PolicyError(
            f"{where}: prefix {prefix!r} must be 1-32 lowercase letters, digits or '-', "
            "starting with a letter"
        )

    strip = raw.get("strip_domain")
    if strip is not None:
        if not isinstance(strip, str) or not _DOMAIN_RE.match(strip.lower()):
            raise PolicyError(f"{where}: strip_domain {strip!r} is not a domain name")
        strip = strip.lower()
        host = entity_id_domain(entity_id)
        if host is None or not _domain_belongs_to(strip, host):
            raise PolicyError(
                f"{where}: strip_domain {strip!r} is not this IdP's own domain "
                f"(its entity id names {host or 'no domain'}); only an IdP's own domain "
                "may be stripped from usernames"
            )

    domains_raw = raw.get("allowed_email_domains")
    if domains_raw is None:
        domains_raw = list(default_email_domains)
    if isinstance(domains_raw, str) or not isinstance(domains_raw, Iterable):
        raise PolicyError(f"{where}: allowed_email_domains must be a list of domains")
    domains = tuple(_check_domain_pattern(d, where) for d in domains_raw)

    for flag in ("allow_all", "default"):
        if not isinstance(raw.get(flag, False), bool):
            raise PolicyError(f"{where}: {flag} must be true or false")

    return IdpPolicy(
        entity_id=entity_id,
        name=str(name),
        username_claim=claim,
        prefix=prefix,
        strip_domain=strip,
        allowed_email_domains=domains,
        allow_all=bool(raw.get("allow_all", False)),
        default=bool(raw.get("default", False)),
    )


def check_no_merge(policies: Mapping[str, IdpPolicy]) -> None:
    """Refuse a set of IdP policies under which two IdPs could produce one username.

    Usernames from an IdP with a prefix always contain ``prefix:``; derived names never
    contain ``:``.  So names are unique across IdPs exactly when at most one IdP has no
    prefix and no two IdPs share a prefix.
    """
    if not policies:
        raise PolicyError("identity_providers is empty: list at least one CILogon IdP")
    home = [p.entity_id for p in policies.values() if p.prefix is None]
    if len(home) > 1:
        raise PolicyError(
            "identity_providers: more than one IdP has no prefix "
            f"({', '.join(sorted(home))}); the same name from two of them would share one "
            "hub account. Give every IdP but one (the home IdP) a distinct prefix"
        )
    seen: dict[str, str] = {}
    for policy in policies.values():
        if policy.prefix is None:
            continue
        if policy.prefix in seen:
            raise PolicyError(
                f"identity_providers: prefix {policy.prefix!r} is used by both "
                f"{seen[policy.prefix]} and {policy.entity_id}; prefixes must be distinct"
            )
        seen[policy.prefix] = policy.entity_id
    defaults = [p.entity_id for p in policies.values() if p.default]
    if len(defaults) > 1:
        raise PolicyError(f"identity_providers: more than one default IdP: {defaults}")


def parse_identity_providers(
    raw: Mapping[str, Mapping[str, object]], default_email_domains: Iterable[str] = ()
) -> dict[str, IdpPolicy]:
    """Validate the whole ``identity_providers`` setting; see :func:`check_no_merge`."""
    default_email_domains = list(default_email_domains)
    policies = {
        entity_id: parse_idp_policy(entity_id, entry, default_email_domains)
        for entity_id, entry in raw.items()
    }
    check_no_merge(policies)
    return policies


def build_idps(policies: Mapping[str, IdpPolicy]) -> dict[str, dict]:
    """oauthenticator's ``CILogonOAuthenticator.idps`` for afhub's policies.

    It drives CILogon's IdP selection (``selected_idp``) and oauthenticator's refusal of
    IdPs not listed.  Username derivation and the allow checks are afhub's own
    (:func:`derive_username`, :func:`email_domain_allowed`); the entries carry the same
    data (``allowed_domains`` checked against the ``email`` claim) for readers of ``idps``.
    """
    idps: dict[str, dict] = {}
    home = next((p.entity_id for p in policies.values() if p.default), None)
    if home is None:
        home = next((p.entity_id for p in policies.values() if p.prefix is None), None)
    for entity_id, policy in policies.items():
        derivation: dict[str, str] = {"username_claim": policy.username_claim}
        if policy.prefix is not None:
            derivation.update(action="prefix", prefix=policy.prefix)
        elif policy.strip_domain is not None:
            derivation.update(action="strip_idp_domain", domain=policy.strip_domain)
        entry: dict = {"username_derivation": derivation, "allow_all": policy.allow_all}
        if policy.allowed_email_domains:
            entry["allowed_domains"] = list(policy.allowed_email_domains)
            entry["allowed_domains_claim"] = "email"
        if entity_id == home:
            entry["default"] = True
        idps[entity_id] = entry
    return idps


def derive_username(policy: IdpPolicy, user_info: Mapping[str, object]) -> str:
    """The hub username for a user of ``policy``'s IdP, or :class:`UsernameError`.

    The claim is lowercased and stripped of surrounding space.  With ``strip_domain`` the
    value must end in ``@<strip_domain>`` (anything else is refused, never kept whole), and
    what remains may not contain ``@``.  The result may not contain ``:``; with a
    ``prefix`` it becomes ``prefix:name``.
    """
    value = user_info.get(policy.username_claim)
    if not isinstance(value, str) or not value.strip():
        raise UsernameError(
            f"{policy.name} did not release the claim {policy.username_claim!r} "
            "that names its users"
        )
    name = value.strip().lower()
    if policy.strip_domain is not None:
        suffix = "@" + policy.strip_domain
        if not name.endswith(suffix) or len(name) == len(suffix):
            raise UsernameError(
                f"{policy.name} asserted {policy.username_claim} {value!r}, which is not "
                f"in its own domain {policy.strip_domain}"
            )
        name = name[: -len(suffix)]
        pattern = _LOCAL_NAME_RE
    else:
        pattern = _FULL_NAME_RE
    if not pattern.match(name):
        raise UsernameError(
            f"{policy.name} asserted {policy.username_claim} {value!r}, which does not "
            "make a valid afhub username (letters, digits, '.', '_', '+', '-')"
        )
    if policy.prefix is not None:
        name = f"{policy.prefix}{PREFIX_SEPARATOR}{name}"
    if len(name) > _MAX_USERNAME:
        raise UsernameError(f"username derived from {value!r} is too long")
    return name


def email_domain_allowed(email: object, patterns: Iterable[str]) -> bool:
    """True if ``email``'s domain matches one of ``patterns``.

    ``a.edu`` matches exactly ``a.edu``; ``*.a.edu`` matches its subdomains (not ``a.edu``
    itself).  A missing or malformed email never matches.
    """
    if not isinstance(email, str) or email.count("@") != 1:
        return False
    local, domain = email.strip().lower().split("@")
    if not local or not _DOMAIN_RE.match(domain):
        return False
    for pattern in patterns:
        if pattern.startswith("*."):
            if domain.endswith(pattern[1:]):
                return True
        elif domain == pattern:
            return True
    return False


def normalize_group_claim(value: object) -> list[str]:
    """The group names in a group claim, in order, without duplicates or blanks.

    CILogon sends ``isMemberOf`` as a list, some IdPs as one comma-separated string.
    Anything else (a missing claim, numbers, nested objects) gives no groups.
    """
    if value is None:
        return []
    if isinstance(value, str):
        items: list[object] = list(value.split(","))
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        return []
    groups: list[str] = []
    for item in items:
        if isinstance(item, str):
            item = item.strip()
            if item and item not in groups:
                groups.append(item)
    return groups


def is_group_path(name: object) -> bool:
    """True if ``name`` is a valid afhub group path (``atlas``, ``atlas/higgs``)."""
    try:
        validate_path(name)
    except InvalidGroupName:
        return False
    return True


def check_group_name(name: object, where: str) -> str:
    """Validate a hub group name given in configuration (an afhub group path)."""
    try:
        return validate_path(name)
    except InvalidGroupName as e:
        raise PolicyError(f"{where}: {e}") from None


def map_groups(
    claims: Iterable[str],
    group_map: Mapping[str, str],
    group_prefixes: Iterable[str] = (),
    keep_unmapped: bool = False,
) -> set[str]:
    """Hub group names for the values of a group claim.

    A value listed in ``group_map`` becomes the mapped name; else a value starting with one
    of ``group_prefixes`` becomes the rest of the value; else it is kept as is only when
    ``keep_unmapped``.  Names that are not valid afhub group paths
    (:func:`afhub.groups.names.validate_path`: lowercase segments joined by ``/``) are
    dropped.
    """
    group_prefixes = [p for p in group_prefixes if p]
    groups: set[str] = set()
    for claim in claims:
        if claim in group_map:
            name = group_map[claim]
        else:
            prefix = next((p for p in group_prefixes if claim.startswith(p)), None)
            if prefix is not None:
                name = claim[len(prefix) :]
            elif keep_unmapped:
                name = claim
            else:
                continue
        if is_group_path(name):
            groups.add(name)
    return groups


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
