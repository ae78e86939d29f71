"""Build a user's kubespawner ``profile_list`` from the registry, and resolve choices.

Pure core: no JupyterHub, no database. The same two functions serve the Kubernetes
spawner (which hands the list to kubespawner) and, later, the local spawner:

* :func:`build_profile_list` gives one profile per resource the user's groups may use
  (a resource allowed to ``atlas`` is usable from ``atlas/higgs``), with choices for the
  number of accelerators (or cores), memory and image. Choices that set an extended
  resource set its request and its limit together (Kubernetes refuses them unequal).
  With ``remaining`` (units the user's quota still allows per resource) choices above it
  are left out, a resource with nothing left is left out, and the description says what
  is left.
* :func:`resolve_user_options` checks ``user_options`` (from the spawn form or the REST
  API) against that list, server side: unknown profile, unknown key, unlisted choice or
  free text that does not fully match its pattern raise :class:`ProfileError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from afhub.registry.model import Registry, Resource, expand_groups, parse_quantity

#: user_options keys that belong to other parts of afhub (the charged group)
DEFAULT_EXTRA_KEYS = frozenset({"charge_to"})
UNLISTED_SUFFIX = "--unlisted-choice"
#: longest free-text value accepted for an unlisted choice
MAX_UNLISTED_LENGTH = 255
DEFAULT_MEMORY_CHOICES = ("2Gi", "4Gi", "8Gi", "16Gi", "32Gi")
UNIT_NAMES = {"cpu": ("core", "cores"), "gpu": ("GPU", "GPUs"), "fpga": ("FPGA", "FPGAs")}


class ProfileError(ValueError):
    """A profile or choice this user may not use, or malformed ``user_options``."""


@dataclass(frozen=True)
class ResolvedChoice:
    """What a spawn request resolved to: the profile, its choices and the overrides."""

    profile: str | None
    choices: Mapping[str, str] = field(default_factory=dict)
    unlisted: Mapping[str, str] = field(default_factory=dict)
    kubespawner_override: Mapping[str, Any] = field(default_factory=dict)

    def user_options(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Normalised ``user_options`` (only known keys, values as strings)."""
        out: dict[str, Any] = dict(extra or {})
        if self.profile is not None:
            out["profile"] = self.profile
        out.update(self.choices)
        out.update({f"{k}{UNLISTED_SUFFIX}": v for k, v in self.unlisted.items()})
        return out


def _units(kind: str, n: float) -> str:
    one, many = UNIT_NAMES[kind]
    return f"{n:g} {one if n == 1 else many}"


def _cpu_share(resource: Resource, n: int) -> float:
    return round(resource.cpu_per_node * n / resource.count_per_node, 3)


def _count_choices(resource: Resource, limit: float | None) -> list[int]:
    if resource.is_accelerated:
        counts = list(range(1, resource.count_per_node + 1))
    else:
        top = int(resource.cpu_per_node)
        counts, n = [], 1
        while n <= top:
            counts.append(n)
            n *= 2
        if not counts:
            counts = [1]
    if limit is not None:
        counts = [n for n in counts if n <= limit]
    return counts


def _memory_choices(resource: Resource) -> list[str]:
    if resource.memory_choices:
        return list(resource.memory_choices)
    node = resource.memory_bytes
    fits = [m for m in DEFAULT_MEMORY_CHOICES if parse_quantity(m) <= node]
    return fits or [resource.memory_per_node]


def _count_option(resource: Resource, counts: list[int]) -> tuple[str, dict]:
    choices: dict[str, dict] = {}
    for i, n in enumerate(counts):
        if resource.is_accelerated:
            cpu = _cpu_share(resource, n)
            amount = {resource.extended_resource: str(n)}
            override = {
                "extra_resource_guarantees": dict(amount),
                "extra_resource_limits": dict(amount),
                "cpu_guarantee": cpu,
                "cpu_limit": cpu,
            }
            name = f"{_units(resource.kind, n)} ({resource.accelerator}), {cpu:g} cores"
        else:
            override = {"cpu_guarantee": float(n), "cpu_limit": float(n)}
            name = _units("cpu", n)
        choices[str(n)] = {"display_name": name, "kubespawner_override": override}
        if i == 0:
            choices[str(n)]["default"] = True
    key = "cpus" if resource.kind == "cpu" else "accelerators"
    label = "CPU cores" if resource.kind == "cpu" else f"Number of {UNIT_NAMES[resource.kind][1]}"
    return key, {"display_name": label, "choices": choices}


def _memory_option(resource: Resource) -> dict:
    choices: dict[str, dict[str, Any]] = {}
    for i, m in enumerate(_memory_choices(resource)):
        size = parse_quantity(m)
        choices[m] = {
            "display_name": m,
            "kubespawner_override": {"mem_guarantee": size, "mem_limit": size},
        }
        if i == 0:
            choices[m]["default"] = True
    return {"display_name": "Memory", "choices": choices}


def _image_option(resource: Resource) -> dict:
    images = list(dict.fromkeys((resource.image, *resource.images)))
    choices: dict[str, dict[str, Any]] = {}
    for i, image in enumerate(images):
        choices[image] = {"display_name": image, "kubespawner_override": {"image": image}}
        if i == 0:
            choices[image]["default"] = True
    option: dict[str, Any] = {"display_name": "Image", "choices": choices}
    if resource.image_pattern:
        option["unlisted_choice"] = {
            "enabled": True,
            "display_name": "Other image",
            "validation_regex": resource.image_pattern,
            "validation_message": f"The image must match {resource.image_pattern}",
            "kubespawner_override": {"image": "{value}"},
        }
    return option


def profile_for(
    resource: Resource, provider_name: str, left: float | None = None
) -> dict[str, Any] | None:
    """The kubespawner profile of one resource (``None`` when the quota leaves nothing)."""
    counts = _count_choices(resource, left)
    if not counts:
        return None
    profile = _profile_body(resource, provider_name, counts)
    if left is not None:
        profile["description"] += f" Your quota leaves {_units(resource.kind, left)}."
    return profile


#: profile bodies by (resource identity, provider, counts); resources are immutable, and
#: the resource itself is kept in the entry so that its id cannot be reused meanwhile
_BODIES: dict[tuple, tuple[Resource, dict[str, Any]]] = {}
_MAX_BODIES = 8192


def _shared_body(resource: Resource, provider_name: str, counts: list[int]) -> dict[str, Any]:
    key = (id(resource), provider_name, tuple(counts))
    entry = _BODIES.get(key)
    if entry is None or entry[0] is not resource:
        if len(_BODIES) >= _MAX_BODIES:
            _BODIES.clear()
        entry = (resource, _profile_body(resource, provider_name, counts))
        _BODIES[key] = entry
    return entry[1]


#: memory and image options by value: a facility has few memory sizes and images, so
#: resources share them, and they stay built across registry changes (read-only too)
_OPTIONS: dict[tuple, dict[str, Any]] = {}


def _shared_option(key: tuple, build, resource: Resource) -> dict[str, Any]:
    option = _OPTIONS.get(key)
    if option is None:
        if len(_OPTIONS) >= _MAX_BODIES:
            _OPTIONS.clear()
        option = _OPTIONS[key] = build(resource)
    return option


def _profile_body(resource: Resource, provider_name: str, counts: list[int]) -> dict[str, Any]:
    key, count_option = _count_option(resource, counts)
    memory_option = _shared_option(
        ("memory", resource.memory_per_node, resource.memory_choices), _memory_option, resource
    )
    image_option = _shared_option(
        ("image", resource.image, resource.images, resource.image_pattern),
        _image_option,
        resource,
    )
    override: dict[str, Any] = {
        "image": resource.image,
        "node_selector": dict(resource.node_selector),
        "tolerations": [dict(t) for t in resource.tolerations],
        "environment": {
            "AFHUB_RESOURCE": resource.name,
            "AFHUB_RESOURCE_KIND": resource.kind,
            "AFHUB_ACCELERATOR": resource.accelerator,
            "AFHUB_SITE": resource.site,
        },
    }
    for option in (count_option, memory_option):  # the default choices, as a start
        default = next(c for c in option["choices"].values() if c.get("default"))
        for name, value in default["kubespawner_override"].items():
            override[name] = dict(value) if isinstance(value, dict) else value
    if resource.is_accelerated:
        title = f"{resource.accelerator} ({resource.site})"
        what = (
            f"{resource.kind.upper()}: {resource.accelerator}, up to "
            f"{_units(resource.kind, resource.count_per_node)} per server"
        )
    else:
        title = f"CPU ({resource.site})"
        what = f"CPU: up to {_units('cpu', counts[-1])} per server"
    description = resource.description or f"{what}; provided by {provider_name}."
    return {
        "display_name": title,
        "slug": resource.name,
        "description": description,
        "kubespawner_override": override,
        "profile_options": {
            key: count_option,
            "memory": memory_option,
            "image": image_option,
        },
    }


def build_profile_list(
    registry: Registry,
    user_groups: Iterable[str],
    remaining: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """The kubespawner ``profile_list`` for a member of ``user_groups``.

    ``remaining`` maps a resource name to the units (accelerators, or cores for a CPU
    resource) the user's quota still allows there; a resource missing from it is not
    limited. The first profile is the default.

    The profiles' nested dicts (overrides, options) are shared between calls for speed:
    treat the list as read-only. kubespawner deep-copies it before changing anything.
    """
    expanded = expand_groups(user_groups)
    profiles = []
    for resource in registry.resources.values():
        if expanded.isdisjoint(resource.allowed_groups):
            continue
        left = None if remaining is None else remaining.get(resource.name)
        counts = _count_choices(resource, left)
        if not counts:
            continue
        provider = registry.providers[resource.provider].institution
        profile = dict(_shared_body(resource, provider, counts))
        if left is not None:
            profile["description"] += f" Your quota leaves {_units(resource.kind, left)}."
        profiles.append(profile)
    if profiles:
        profiles[0]["default"] = True
    return profiles


def _merge(target: dict, override: Mapping) -> None:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        elif isinstance(value, Mapping):
            target[key] = {}
            _merge(target[key], value)
        elif isinstance(value, list):
            target[key] = [dict(v) if isinstance(v, Mapping) else v for v in value]
        else:
            target[key] = value


def _format(value: Any, text: str) -> Any:
    if isinstance(value, str):
        return value.replace("{value}", text)
    if isinstance(value, Mapping):
        return {k: _format(v, text) for k, v in value.items()}
    if isinstance(value, list):
        return [_format(v, text) for v in value]
    return value


def _as_text(key: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ProfileError(f"user option {key!r} must be a string, not {type(value).__name__}")
    return str(value)


def _chosen_profile(profile_list: list[Mapping[str, Any]], slug: str | None) -> Mapping[str, Any]:
    """The profile named ``slug``, or the default one (else the first) when none is named."""
    if slug is None:
        return next((p for p in profile_list if p.get("default")), profile_list[0])
    profile = next((p for p in profile_list if p.get("slug") == slug), None)
    if profile is None:
        raise ProfileError(f"profile {slug!r} is not available to you")
    return profile


def _check_keys(
    profile: Mapping[str, Any], user_options: Mapping[str, Any], extra: frozenset[str]
) -> None:
    """Every key is ``profile``, an extra key, or an option (or free text) of the profile."""
    options: Mapping[str, Any] = profile.get("profile_options") or {}
    allowed = {"profile", *extra, *options}
    allowed.update(
        f"{name}{UNLISTED_SUFFIX}"
        for name, option in options.items()
        if (option.get("unlisted_choice") or {}).get("enabled")
    )
    unknown = sorted(map(str, set(user_options) - allowed))
    if unknown:
        raise ProfileError(f"unknown options for profile {profile['slug']!r}: {unknown}")


def _free_text(name: str, option: Mapping[str, Any], free: str) -> Any:
    """The override of an allowed free-text value (it must fully match the pattern)."""
    spec = option["unlisted_choice"]
    pattern = spec.get("validation_regex")
    if not pattern or len(free) > MAX_UNLISTED_LENGTH or re.fullmatch(pattern, free) is None:
        raise ProfileError(f"option {name!r}: {free!r} is not an allowed value")
    return _format(spec.get("kubespawner_override") or {}, free)


def _listed_choice(name: str, listed: Mapping[str, Any], value: str | None) -> str:
    """The listed choice asked for, else the option's default (else its first)."""
    if value is None:
        value = next((k for k, c in listed.items() if c.get("default")), None)
        if value is None:
            value = next(iter(listed), None)
        if value is None:
            raise ProfileError(f"option {name!r} has no default; choose a value")
    elif value not in listed:
        raise ProfileError(f"option {name!r}: {value!r} is not one of {sorted(listed)} for you")
    return value


def resolve_user_options(
    profile_list: list[Mapping[str, Any]],
    user_options: Mapping[str, Any] | None,
    extra_keys: Iterable[str] = DEFAULT_EXTRA_KEYS,
) -> ResolvedChoice:
    """Check ``user_options`` against ``profile_list``; raise ProfileError if not allowed."""
    if user_options is None:
        user_options = {}
    if not isinstance(user_options, Mapping):
        raise ProfileError("user options must be a mapping")
    extra = frozenset(extra_keys)
    slug = _as_text("profile", user_options.get("profile"))
    if not profile_list:
        unknown = sorted(map(str, set(user_options) - extra))
        if unknown:
            raise ProfileError(f"no profiles are available to you; unknown options {unknown}")
        return ResolvedChoice(profile=None)
    profile = _chosen_profile(profile_list, slug)
    _check_keys(profile, user_options, extra)
    merged: dict[str, Any] = {}
    _merge(merged, profile.get("kubespawner_override") or {})
    choices: dict[str, str] = {}
    unlisted: dict[str, str] = {}
    options: Mapping[str, Any] = profile.get("profile_options") or {}
    for name, option in options.items():
        value = _as_text(name, user_options.get(name))
        key = f"{name}{UNLISTED_SUFFIX}"
        free = _as_text(key, user_options.get(key))
        if value is not None and free is not None:
            raise ProfileError(f"option {name!r}: give a listed choice or other text, not both")
        if free is not None:
            unlisted[name] = free
            _merge(merged, _free_text(name, option, free))
            continue
        listed: Mapping[str, Any] = option.get("choices") or {}
        choices[name] = _listed_choice(name, listed, value)
        _merge(merged, listed[choices[name]].get("kubespawner_override") or {})
    return ResolvedChoice(
        profile=profile["slug"], choices=choices, unlisted=unlisted, kubespawner_override=merged
    )
