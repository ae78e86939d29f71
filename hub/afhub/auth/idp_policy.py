"""afhub's identity-provider policy for CILogon login: pure functions, no hub.

``identity_providers`` is the one place that lists the identity providers (IdPs) a user
may come from, how each one's users are named and which of them may log in. The policy is
checked at start-up so that two different people can never end up in one hub account: at
most one "home" IdP keeps bare usernames, every other IdP gets its own prefix
(``prefix:name``), a domain is stripped only when it is the IdP's own, and the derived
names are normalised and validated (:func:`parse_identity_providers`,
:func:`derive_username`, :func:`email_domain_allowed`). oauthenticator's ``idps`` is
derived from it (:func:`build_idps`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlparse

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


def _check_entry(entity_id: str, raw: object, where: str) -> None:
    """An entry is keyed by a CILogon entity id and is a mapping of known keys."""
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


def _parse_prefix(prefix: object, where: str) -> str | None:
    if prefix is not None and not (isinstance(prefix, str) and _PREFIX_RE.match(prefix)):
        raise PolicyError(
            f"{where}: prefix {prefix!r} must be 1-32 lowercase letters, digits or '-', "
            "starting with a letter"
        )
    return prefix


def _parse_strip_domain(strip: object, entity_id: str, where: str) -> str | None:
    """``strip_domain``: a domain name, and the IdP's own (its entity id's or above)."""
    if strip is None:
        return None
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
    return strip


def _parse_email_domains(
    domains_raw: object, default_email_domains: Iterable[str], where: str
) -> tuple[str, ...]:
    if domains_raw is None:
        domains_raw = list(default_email_domains)
    if isinstance(domains_raw, str) or not isinstance(domains_raw, Iterable):
        raise PolicyError(f"{where}: allowed_email_domains must be a list of domains")
    return tuple(_check_domain_pattern(d, where) for d in domains_raw)


def parse_idp_policy(
    entity_id: str, raw: Mapping[str, object], default_email_domains: Iterable[str] = ()
) -> IdpPolicy:
    """Validate one ``identity_providers`` entry and return its :class:`IdpPolicy`.

    ``default_email_domains`` (afhub's global ``allowed_email_domains``) is used when the
    entry sets no ``allowed_email_domains`` of its own.
    """
    where = f"identity_providers[{entity_id!r}]"
    _check_entry(entity_id, raw, where)
    name = raw.get("name") or entity_id
    claim = raw.get("username_claim", "eppn")
    if not isinstance(claim, str) or not claim:
        raise PolicyError(f"{where}: username_claim must be a non-empty string")
    prefix = _parse_prefix(raw.get("prefix"), where)
    strip = _parse_strip_domain(raw.get("strip_domain"), entity_id, where)
    domains = _parse_email_domains(raw.get("allowed_email_domains"), default_email_domains, where)
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
