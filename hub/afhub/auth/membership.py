"""What happens at every login, whichever authenticator: the facility records the person.

afhub's facility database is the source of truth for groups; JupyterHub's groups mirror it
(see :mod:`afhub.services.accountant`). At login :func:`make_login_hook`'s hook

1. records the user in the facility database (with their email when the IdP gives one);
2. feeds CILogon group claims into memberships (``source = "claims"``; memberships made by
   hand or by invitation are never touched), creating the claimed groups that do not exist
   yet (claims reach here only through the operator's ``group_map``/``group_prefixes``);
3. puts a user who belongs to no group into the facility's default group, if one is set;
4. hands JupyterHub the user's full afhub membership, when the authenticator manages
   groups, so the hub's groups for that user equal afhub's right after login.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from afhub.groups.names import InvalidGroupName, validate_path
from afhub.groups.tree import Role
from afhub.stores.errors import AlreadyExists
from afhub.stores.facade import Stores

LoginHook = Callable[[Any, Any, dict], Awaitable[dict]]


def _email(authenticator: Any, auth_model: dict) -> str | None:
    state = auth_model.get("auth_state") or {}
    user_info = state.get(getattr(authenticator, "user_auth_state_key", ""), {}) or {}
    email = user_info.get("email") if isinstance(user_info, dict) else None
    return email if isinstance(email, str) and "@" in email else None


def ensure_group(stores: Stores, path: str) -> None:
    """Create ``path`` and any missing ancestors (groups named by the operator's claim
    mapping); a name that is not a valid group path is left for ``sync_claims`` to skip."""
    try:
        validate_path(path)
    except InvalidGroupName:
        return
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        with contextlib.suppress(AlreadyExists):
            stores.groups.create("/".join(parts[:depth]))


def record_login(
    stores: Stores,
    name: str,
    *,
    email: str | None,
    claims: list[str] | None,
    default_group: str,
) -> list[str]:
    """Steps 1-3 above; returns the user's group paths, sorted."""
    groups = stores.groups
    groups.ensure_user(name, email=email)
    if claims is not None:
        for path in claims:
            ensure_group(stores, path)
        groups.sync_claims(name, claims, email=email)
    if default_group and not groups.roles_of(name):
        with contextlib.suppress(AlreadyExists):
            groups.create(default_group)
        groups.add_member(default_group, name, role=Role.MEMBER, source="default")
    return sorted(groups.roles_of(name))


def make_login_hook(stores_factory: Callable[[], Stores], default_group: str) -> LoginHook:
    """An ``Authenticator.post_auth_hook`` recording each login in the facility database."""

    async def afhub_post_auth_hook(authenticator: Any, _handler: Any, auth_model: dict) -> dict:
        if auth_model is None:
            return auth_model
        manage = bool(getattr(authenticator, "manage_groups", False))
        claims = list(auth_model.get("groups") or []) if manage else None
        paths = await asyncio.to_thread(
            record_login,
            stores_factory(),
            auth_model["name"],
            email=_email(authenticator, auth_model),
            claims=claims,
            default_group=default_group,
        )
        if manage:
            auth_model["groups"] = paths
        return auth_model

    return afhub_post_auth_hook
