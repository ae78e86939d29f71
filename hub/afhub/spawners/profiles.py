"""Profiles from the resource registry, shared by the local and the Kubernetes spawner.

:class:`ProfilesMixin` gives a spawner the user's profiles and checks a spawn request
against them, the same way in both modes:

* the registry comes from the facility database (:meth:`RegistryStore.load`, cheap when
  unchanged), unless the ``registry`` trait names a YAML file or holds a dict;
* only resources allowed to one of the user's JupyterHub groups (or an ancestor) are
  offered; in local mode the machine itself is added (``local-cpu`` unless the registry
  gives the user a CPU resource, ``local-gpu`` when ``nvidia-smi -L`` lists GPUs);
* what the user's quota still allows (:mod:`afhub.quotas.remaining`, from the ledger, for
  the charged group) trims the choices and is shown in each profile's description;
* ``user_options`` are resolved server side (:func:`resolve_user_options`): a profile,
  choice or key the user may not use is an HTTP 403 before anything starts, and a choice
  the quota does not leave is a 403 that says what the quota leaves;
* the chosen profile's accelerators are what :class:`~afhub.spawners.facility.FacilitySpawner`
  claims right after the ledger admits the server (:mod:`afhub.spawners.devices`): no free
  slot is an HTTP 409 at once, and the ledger interval is failed. Slots are released when
  the server stops or dies.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Mapping
from typing import Any

from jupyterhub.traitlets import Callable
from jupyterhub.utils import maybe_future
from tornado import web
from traitlets import Bool, Dict, List, Unicode, Union

from afhub.devices import EVERYONE, LOCAL_GPU, compose, device_environment, local_provider
from afhub.devices.probe import machine_resources
from afhub.profiles.build import (
    DEFAULT_EXTRA_KEYS,
    UNLISTED_SUFFIX,
    ProfileError,
    ResolvedChoice,
    build_profile_list,
    resolve_user_options,
)
from afhub.quotas.limits import Charge, ChargeKind
from afhub.quotas.remaining import Remaining, ResourceKind, describe, units_left
from afhub.registry.model import Registry, Resource, load_registry, parse_registry
from afhub.spawners.facility import FacilitySpawner, parse_charge_option
from afhub.spawners.form import CHARGE_OPTION, native_selects, spawn_error
from afhub.stores.errors import StoreError

#: user option naming the profile, as kubespawner's form posts it
PROFILE_OPTION = "profile"
_FORM_PREFIX = "profile-option-"


@functools.lru_cache(maxsize=8)
def _machine(command: str) -> tuple[dict[str, Resource], tuple[str, ...]]:
    """This machine as resources (built once per process: profile bodies are cached by
    resource identity) and the ids of its real GPUs."""
    return machine_resources(command)


def form_options(formdata: Mapping[str, list[str]]) -> dict[str, str]:
    """``user_options`` from kubespawner's profile form: ``profile`` plus the chosen
    profile's ``profile-option-<slug>--<option>`` fields (other fields are dropped)."""
    options: dict[str, str] = {}
    slug = (formdata.get(PROFILE_OPTION) or [""])[0]
    if slug:
        options[PROFILE_OPTION] = slug
        prefix = f"{_FORM_PREFIX}{slug}--"
        for key, values in formdata.items():
            if key.startswith(prefix) and values and values[0] != "":
                name = key[len(prefix) :]
                if name.endswith(UNLISTED_SUFFIX) or values[0] != "unlisted-choice":
                    options[name] = values[0]
    return options


@functools.cache
def _profile_form_template():
    """kubespawner's ``form.html``, compiled once (compiling it took ~50 ms per request)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("kubespawner", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.policies["json.dumps_kwargs"] = {"sort_keys": False}
    return env.get_template("form.html")


def render_profile_form(profile_list: list[dict], user_options: Mapping[str, Any]) -> str:
    """kubespawner's own profile form (its ``form.html``), HTML-escaped, its selects
    with the hub's select look."""
    import copy

    profiles = copy.deepcopy(profile_list)
    for profile in profiles:
        for option in (profile.get("profile_options") or {}).values():
            unlisted = option.setdefault("unlisted_choice", {})
            unlisted.setdefault("enabled", False)
            if unlisted["enabled"]:
                unlisted.setdefault("display_name_in_choices", "Other...")
    if profiles and not any(p.get("default") for p in profiles):
        profiles[0]["default"] = True
    html = _profile_form_template().render(
        profile_list=profiles, user_options=dict(user_options or {})
    )
    return native_selects(html)


class ProfilesMixin(FacilitySpawner):
    """Registry profiles, server-side resolution and exclusive devices (put it first)."""

    registry = Union(
        [Unicode(), Dict()],
        default_value="",
        help="""Override of the resource registry: the path of a YAML file (re-read when
        it changes) or the registry itself as a dict (the shape of docs/resources.md).
        Empty (the default): the registry in the facility database, managed with
        ``afhub resources`` and the facility API.""",
    ).tag(config=True)

    remaining_quota = Callable(
        None,
        allow_none=True,
        help="""Optional hook ``f(spawner) -> {resource name: units left}`` (may be async)
        replacing the ledger's view of what the user's quota leaves (accelerators, or
        cores for a CPU resource). Larger choices are left out and refused.""",
    ).tag(config=True)

    extra_user_option_keys = Unicode(
        ",".join(sorted(DEFAULT_EXTRA_KEYS)),
        help="""Comma-separated user_options keys that other parts of afhub read (the
        charged group); every other key not defined by the chosen profile is refused.""",
    ).tag(config=True)

    refuse_without_profile = Bool(
        True,
        help="""Refuse (403) a spawn by a user whose groups may use no resource, instead
        of starting a server with the spawner's defaults.""",
    ).tag(config=True)

    local_devices = Bool(
        False,
        help="""Local mode: add this machine's resources (``local-cpu``, ``local-gpu``) to
        the registry, and tell each server which devices it holds through its
        environment (``AFHUB_DEVICES``, ``AFHUB_DEVICES_SIMULATED``,
        ``CUDA_VISIBLE_DEVICES``).""",
    ).tag(config=True)

    nvidia_smi = Unicode(
        "nvidia-smi",
        help="""Command whose ``-L`` output lists this machine's NVIDIA GPUs (local mode);
        empty: never look for GPUs.""",
    ).tag(config=True)

    real_devices = Dict(
        value_trait=List(Unicode()),
        help="""Local mode: registry resources backed by this machine's real GPUs, as
        ``{resource name: [CUDA device index or UUID per slot]}``. Accelerators of other
        registered resources are simulated. ``local-gpu`` maps to the GPUs found.""",
    ).tag(config=True)

    _registry_cache: tuple[Any, Registry] | None = None
    _afhub_resolved: ResolvedChoice | None = None
    _afhub_allowed: list[dict] | None = None
    _afhub_resource: Resource | None = None
    _afhub_slots: tuple[int, ...] = ()
    _afhub_payer: str | None = None

    # -- where profiles come from --

    def load_registry(self) -> Registry:
        """The configured registry (file or dict), else the facility database's."""
        source = self.registry
        if isinstance(source, Mapping):
            key: Any = ("dict", id(source))
        elif source:
            key = ("file", source, os.stat(source).st_mtime_ns)
        else:
            return self.stores.registry.load()
        if self._registry_cache is None or self._registry_cache[0] != key:
            registry = parse_registry(source) if key[0] == "dict" else load_registry(source)
            self._registry_cache = (key, registry)
        return self._registry_cache[1]

    def user_group_names(self) -> set[str]:
        """The user's groups: their memberships in the facility database (the source of
        truth, current at once) when charging uses it, else their JupyterHub groups (its
        mirror, up to one checkpoint interval behind)."""
        if self.charging:
            return set(self.stores.groups.roles_of(self.user.name))
        return {group.name for group in getattr(self.user, "groups", None) or []}

    def _machine(self) -> tuple[dict[str, Resource], tuple[str, ...]]:
        return _machine(self.nvidia_smi)

    def offered_registry(self) -> tuple[Registry, set[str]]:
        """The registry the user chooses from and the groups to check it with."""
        registry = self.load_registry()
        groups = self.user_group_names()
        if not self.local_devices:
            return registry, groups
        local, _ = self._machine()
        resources = compose(registry.resources, groups, local)
        providers = dict(registry.providers)
        providers.setdefault(local_provider().name, local_provider())
        return Registry(providers=providers, resources=resources), groups | {EVERYONE}

    async def _units(self, registry: Registry, group: str | None):
        if self.remaining_quota is not None:
            return await maybe_future(self.remaining_quota(self)), None
        room = await asyncio.to_thread(self.quota_room, group)
        if room is None:
            return None, None
        kinds = [ResourceKind(r.name, r.is_accelerated) for r in registry.resources.values()]
        return units_left(room, kinds), room

    async def _offered_units(self, registry: Registry, group: str | None):
        """Units the form offers: with several groups to charge (and none named), for each
        resource the most that any group that may pay for it leaves (the "Charge to
        group" select says what each leaves; admission checks the one chosen)."""
        paths = []
        if group is None and self.charging and self.remaining_quota is None:
            paths = sorted(await asyncio.to_thread(self.stores.groups.roles_of, self.user.name))
        if len(paths) < 2:
            return await self._units(registry, group)
        rooms = [(path, (await self._units(registry, path))[0]) for path in paths]
        units: dict[str, float] = {}
        for resource in registry.resources.values():
            found = [
                u.get(resource.name) for p, u in rooms if u is not None and resource.payable_by(p)
            ]
            if found and None not in found:
                units[resource.name] = max(found)
        return units, None

    async def afhub_profile_list(self, group: str | None = None) -> list[dict]:
        """The user's profiles with what the quota leaves (for the form)."""
        registry, groups = await asyncio.to_thread(self.offered_registry)
        units, room = await self._offered_units(registry, group)
        profiles = build_profile_list(registry, groups, units)
        if room is not None:
            line = describe(room)
            for profile in profiles:
                if profile["slug"] not in (units or {}):
                    profile["description"] = f"{profile['description']} {line}"
        return profiles

    # -- resolution, server side --

    def _extra_keys(self) -> set[str]:
        return {k for k in self.extra_user_option_keys.split(",") if k}

    async def resolve_profile(self) -> ResolvedChoice:
        """Check ``user_options`` against the user's profiles; HTTP 403 if not allowed."""
        options = self.user_options or {}
        registry, groups = await asyncio.to_thread(self.offered_registry)
        allowed = build_profile_list(registry, groups)
        if not allowed and self.refuse_without_profile:
            self.log.warning("Refused spawn for %s: no resource for their groups", self.user.name)
            raise spawn_error(403, "No resource of this facility is available to your groups")
        extra = self._extra_keys()
        self._afhub_payer = None
        try:
            resolved = resolve_user_options(allowed, options, extra)
        except ProfileError as exc:
            self.log.warning("Refused spawn options for %s: %s", self.user.name, exc)
            raise spawn_error(403, str(exc)) from None
        resource = registry.resources.get(resolved.profile or "")
        # the charged group; a malformed charge_to is a 400 here, as at admission
        charge_to = None
        if self.charging:
            charge_to = parse_charge_option(options.get(CHARGE_OPTION))
            if resource is not None:
                charge_to = await asyncio.to_thread(self.choose_payer, resource, charge_to)
                self._afhub_payer = charge_to
        units, room = await self._units(registry, charge_to)
        if units:
            try:
                resolve_user_options(build_profile_list(registry, groups, units), options, extra)
            except ProfileError as exc:
                self._afhub_resolved, self._afhub_resource = resolved, resource
                raise await asyncio.to_thread(self.over_quota, charge_to, room, exc) from None
        self._afhub_resolved = resolved
        self._afhub_allowed = allowed
        self._afhub_resource = resource
        return resolved

    def over_quota(
        self, group: str | None, room: Remaining | None, exc: ProfileError
    ) -> web.HTTPError:
        """The 403 for a choice the quota of ``group`` does not leave: the ledger's refusal
        in plain words (:meth:`refusal`), else what the quota leaves."""
        charge = self.server_charge()
        decision = None
        if self.charging:  # without charging there is no ledger to ask (nor a database)
            try:
                decision = self.stores.ledger.preview(
                    user=self.user.name, charge=charge, group=group
                )
            except StoreError:
                decision = None
        if decision is not None and not decision.allowed:
            return self.refusal(decision.refusals[0], charge, group)
        left = describe(room) if room is not None else "Your quota does not allow it."
        self.log.warning("Refused spawn for %s: %s Refused: %s", self.user.name, left, exc)
        return spawn_error(403, f"{left} Refused: {exc}")

    def may_pay(self, group: str) -> bool:
        """Whether ``group`` may pay for the chosen profile's resource."""
        resource = self._afhub_resource
        return resource is None or resource.payable_by(group)

    def choose_payer(self, resource: Resource, requested: str | None) -> str:
        """The group that pays for a server on ``resource``: access and payment agree.

        A resource opened to a group may only be charged to that group or one below it
        (:meth:`Resource.payable_by`). ``requested`` (the ``charge_to`` option) must be
        such a group of the user's, else HTTP 403 naming the groups that may pay. Without a
        request the user's default group pays when it may; otherwise their one group that
        may, and with several the user is asked to choose.
        """
        user = self.user.name
        groups = self.stores.groups
        try:
            group = groups.resolve_charge_group(user, requested)
        except StoreError as exc:
            if requested:  # not a member of it, or no such group
                raise spawn_error(exc.status, str(exc)) from None
            group = None
        if group is not None and resource.payable_by(group):
            return group
        payable = sorted(p for p in groups.roles_of(user) if resource.payable_by(p))
        if not requested and len(payable) == 1:
            return payable[0]
        if group is not None:
            reason = resource.payer_refusal(group) or ""
        else:
            reason = f"choose the group to charge for resource {resource.name!r}"
        if payable:
            reason += f" (your groups that may pay: {', '.join(payable)})"
        else:
            reason += " (none of your groups may pay for it)"
        self.log.warning("Refused spawn for %s: %s", user, reason)
        raise spawn_error(403, reason[0].upper() + reason[1:])

    def charge_group_option(self) -> str | None:
        """The group admission charges: the payer chosen at resolution, when there is one."""
        if self._afhub_payer is not None:
            return self._afhub_payer
        return super().charge_group_option()

    def cannot_pay(self, registry: Registry, profiles: list[dict]) -> dict[str, list[str]]:
        """For the spawn form: each of the user's groups -> the offered profiles it may not
        pay for."""
        paths = self.stores.groups.roles_of(self.user.name)
        out: dict[str, list[str]] = {}
        for path in paths:
            out[path] = [
                p["slug"]
                for p in profiles
                if p["slug"] in registry.resources
                and not registry.resources[p["slug"]].payable_by(path)
            ]
        return out

    async def prepare_start(self) -> None:
        """Resolve the request before anything is admitted or started."""
        await self.resolve_profile()
        self.apply_profile()

    def apply_profile(self) -> None:
        """Apply the resolved profile to the spawner (kubespawner applies it itself)."""

    # -- what is charged and held --

    def resolved_accelerators(self) -> int:
        resource, resolved = self._afhub_resource, self._afhub_resolved
        if resource is None or resolved is None or not resource.is_accelerated:
            return 0
        limits = resolved.kubespawner_override.get("extra_resource_limits") or {}
        return int(limits.get(resource.extended_resource, 0))

    def server_charge(self) -> Charge:
        """Cores and accelerators of the chosen profile, ``resource`` = its name."""
        resolved = self._afhub_resolved
        if resolved is None or resolved.profile is None:
            return super().server_charge()
        override = resolved.kubespawner_override
        cores = override.get("cpu_limit") or override.get("cpu_guarantee")
        return Charge(
            kind=ChargeKind.SERVER,
            cpu_cores=float(cores or self.charged_cpu_cores),
            gpus=self.resolved_accelerators(),
            resource=resolved.profile,
        )

    def claimed_devices(self) -> tuple[Resource | None, int]:
        """The chosen profile's resource and its accelerators (claimed after admission)."""
        return self._afhub_resource, self.resolved_accelerators()

    def device_env(self) -> dict[str, str]:
        """What the server is told about its devices (local mode)."""
        resource = self._afhub_resource
        real = None
        if resource is not None:
            if resource.name in self.real_devices:
                real = self.real_devices[resource.name]
            elif resource.name == LOCAL_GPU:
                real = list(self._machine()[1])
        return device_environment(resource, self._afhub_slots, real)

    # -- the spawn form (local mode; kubespawner renders its own) --

    async def charge_form(self, profiles: list[dict]) -> str:
        """The "charge to group" select, marking the groups that may not pay for a profile."""
        if not self.charging:
            return ""

        def build() -> str:
            registry, _ = self.offered_registry()
            return self.charge_form_html(self.cannot_pay(registry, profiles))

        return await asyncio.to_thread(build)

    async def form_parts(self) -> tuple[list[dict], str]:
        """The form's profiles and its "charge to group" select, each group's room read
        once for both."""
        self._rooms_memo = {}
        try:
            profiles = await self.afhub_profile_list()
            return profiles, await self.charge_form(profiles)
        finally:
            self._rooms_memo = None

    async def profile_form(self) -> str:
        profiles, charge = await self.form_parts()
        single = len(profiles) == 1 and not any(
            len(option.get("choices") or {}) > 1
            for key, option in (profiles[0].get("profile_options") or {}).items()
            if key == "accelerators"
        )
        if len(profiles) == 0 or single:
            return charge
        return render_profile_form(profiles, self.user_options or {}) + charge

    def profile_options_from_form(self, formdata: Mapping[str, list[str]]) -> dict[str, Any]:
        options: dict[str, Any] = form_options(formdata)
        value = (formdata.get("charge_to") or [""])[0]
        if value:
            options["charge_to"] = value
        return options
