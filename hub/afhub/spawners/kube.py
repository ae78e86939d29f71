"""Kubernetes mode: a KubeSpawner whose profiles come from the afhub resource registry.

Each user sees the profiles of the resources their hub groups may use (groups inherit
down the tree), built by :func:`afhub.profiles.build.build_profile_list`. Before
kubespawner applies a profile, :func:`afhub.profiles.build.resolve_user_options` checks
the request server side: a profile or choice not in the user's list, free text that does
not fully match its pattern, or an unknown ``user_options`` key is refused with HTTP 403
(whether it came from the spawn form or the REST API), before any pod is made.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from jupyterhub.traitlets import Callable
from jupyterhub.utils import maybe_future
from kubespawner import KubeSpawner
from tornado import web
from traitlets import Bool, Dict, Unicode, Union, default

from afhub.profiles.build import (
    DEFAULT_EXTRA_KEYS,
    ProfileError,
    build_profile_list,
    resolve_user_options,
)
from afhub.registry.model import Registry, load_registry, parse_registry


class AfhubKubeSpawner(KubeSpawner):
    """KubeSpawner with per-user profiles from the resource registry, checked server side."""

    registry = Union(
        [Unicode(), Dict()],
        default_value="",
        help="""The resource registry: the path of its YAML file (re-read when the file
        changes) or the registry itself as a dict (the shape of docs/resources.md).""",
    ).tag(config=True)

    remaining_quota = Callable(
        None,
        allow_none=True,
        help="""Optional hook ``f(spawner) -> {resource name: units left}`` (may be async):
        the accelerators (or cores) the user's quota still allows per resource. Larger
        choices are left out of the profiles and the description shows what is left.""",
    ).tag(config=True)

    extra_user_option_keys = Unicode(
        ",".join(sorted(DEFAULT_EXTRA_KEYS)),
        help="""Comma-separated user_options keys that other parts of afhub read (the
        charged group); every other key not defined by the chosen profile is refused.""",
    ).tag(config=True)

    refuse_without_profile = Bool(
        True,
        help="""With a registry configured, refuse (403) a spawn by a user whose groups may
        use no resource, instead of starting a pod with the spawner's defaults.""",
    ).tag(config=True)

    _registry_cache: tuple[Any, Registry] | None = None

    @default("profile_list")
    def _default_profile_list(self):
        return self._afhub_profile_list

    def load_registry(self) -> Registry:
        """The parsed registry (cached; a file is parsed again when its mtime changes)."""
        source = self.registry
        if isinstance(source, Mapping):
            key: Any = ("dict", id(source))
        elif source:
            key = ("file", source, os.stat(source).st_mtime_ns)
        else:
            return Registry(providers={}, resources={})
        if self._registry_cache is None or self._registry_cache[0] != key:
            registry = parse_registry(source) if key[0] == "dict" else load_registry(source)
            self._registry_cache = (key, registry)
        return self._registry_cache[1]

    def user_group_names(self) -> set[str]:
        """Names of the user's JupyterHub groups (the facility's group paths)."""
        return {group.name for group in getattr(self.user, "groups", None) or []}

    async def _afhub_profile_list(self, spawner: AfhubKubeSpawner) -> list[dict]:
        remaining = None
        if spawner.remaining_quota is not None:
            remaining = await maybe_future(spawner.remaining_quota(spawner))
        return build_profile_list(spawner.load_registry(), spawner.user_group_names(), remaining)

    async def load_user_options(self):
        """Refuse (403) what the user may not use, then let kubespawner apply the profile."""
        configured = profile_list = self.profile_list
        if callable(profile_list):
            profile_list = await maybe_future(profile_list(self))
        if not profile_list and self.registry and self.refuse_without_profile:
            self.log.warning("Refused spawn for %s: no resource for their groups", self.user.name)
            raise web.HTTPError(403, "No resource of this facility is available to your groups")
        extra = {k for k in self.extra_user_option_keys.split(",") if k}
        try:
            resolved = resolve_user_options(profile_list, self.user_options, extra)
        except ProfileError as exc:
            self.log.warning("Refused spawn options for %s: %s", self.user.name, exc)
            raise web.HTTPError(403, str(exc)) from None
        kept = {k: v for k, v in (self.user_options or {}).items() if k in extra}
        self.user_options = resolved.user_options(kept)
        # kubespawner applies the same (now checked) choices to the spawner's traits
        self.profile_list = profile_list
        try:
            await super().load_user_options()
        finally:
            self.profile_list = configured
