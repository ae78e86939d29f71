"""Kubernetes mode: a KubeSpawner whose profiles come from the afhub resource registry.

Each user sees the profiles of the resources their hub groups may use (groups inherit
down the tree), built by :func:`afhub.profiles.build.build_profile_list` from the
registry in the facility database (or the ``registry`` trait's file or dict), with what
the user's quota leaves (:class:`afhub.spawners.profiles.ProfilesMixin`, shared with the
local spawner). Before kubespawner applies a profile,
:func:`afhub.profiles.build.resolve_user_options` checks the request server side: a
profile or choice not in the user's list, free text that does not fully match its
pattern, or an unknown ``user_options`` key is refused with HTTP 403 (whether it came from
the spawn form or the REST API), before any pod is made. With charging on (the default),
the server is admitted by the ledger (403 when the quota refuses) and its accelerators
are counted against the registry's ``node_count x count_per_node`` (409 when none is
free) before the pod is created; Kubernetes' device plugins pick the actual devices.
"""

from __future__ import annotations

from kubespawner import KubeSpawner
from traitlets import default

from afhub.spawners.profiles import ProfilesMixin, render_profile_form


class AfhubKubeSpawner(ProfilesMixin, KubeSpawner):
    """KubeSpawner with per-user profiles from the resource registry, checked server side."""

    @default("profile_list")
    def _default_profile_list(self):
        return self._afhub_profile_list

    @default("options_form")
    def _default_options_form(self):
        async def form(spawner: AfhubKubeSpawner) -> str:
            profiles, charge = await spawner.form_parts()
            html = render_profile_form(profiles, spawner.user_options or {}) if profiles else ""
            return html + charge

        return form

    def options_from_form(self, formdata):
        """kubespawner's profile fields plus the charged group."""
        return self.profile_options_from_form(formdata)

    async def _afhub_profile_list(self, spawner: AfhubKubeSpawner) -> list[dict]:
        return await spawner.afhub_profile_list()

    async def load_user_options(self):
        """Refuse (403) what the user may not use, then let kubespawner apply the profile."""
        resolved = await self.resolve_profile()
        extra = self._extra_keys()
        kept = {k: v for k, v in (self.user_options or {}).items() if k in extra}
        self.user_options = resolved.user_options(kept)
        # kubespawner applies the same (now checked) choices to the spawner's traits
        configured, self.profile_list = self.profile_list, self._afhub_allowed or []
        try:
            await super().load_user_options()
        finally:
            self.profile_list = configured
