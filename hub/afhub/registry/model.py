"""Registry model: providers and resources (node pools), parsed and validated.

Pure core: no JupyterHub, no database. ``parse_registry`` takes the YAML text (or the
already-loaded mapping) of the declarative registry file and returns a :class:`Registry`,
or raises :class:`RegistryError` whose message names the entry and the field at fault.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from afhub.groups.names import InvalidGroupName, validate_path

KINDS = ("cpu", "gpu", "fpga")

#: resource and provider names: also profile slugs, so DNS-label-like
NAME_RE = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
#: extended resource names the facility knows how to schedule (fully matched)
EXTENDED_RESOURCE_RE = re.compile(
    r"nvidia\.com/(gpu|mig-[0-9]+g\.[0-9]+gb)|amd\.com/gpu|xilinx\.com/fpga-[a-z0-9._-]+"
)
#: Kubernetes quantity for memory (binary and decimal suffixes, no exponent form)
QUANTITY_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")
_SUFFIX = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
#: label keys and values (Kubernetes: optional DNS prefix, name of 63 characters)
LABEL_KEY_RE = re.compile(
    r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
)
LABEL_VALUE_RE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
#: container image references: registry/path:tag or @sha256 digest, no spaces or shell chars
IMAGE_RE = re.compile(
    r"[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?"
)
TOLERATION_KEYS = {"key", "operator", "value", "effect", "tolerationSeconds"}
TOLERATION_OPERATORS = ("Exists", "Equal")
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
PROVIDER_FIELDS = {"name", "institution", "contacts", "public_report"}
#: what a provider publishes without login: nothing, the aggregated contributions, or those
#: with the names of the top users too (/services/facility/api/contributions/public/<name>)
PUBLIC_REPORTS = ("off", "aggregate", "with_users")
#: the fields of a resource every user who may use it sees (``/api/resources``), in order
PUBLIC_RESOURCE_FIELDS = (
    "name",
    "provider",
    "site",
    "kind",
    "accelerator",
    "count_per_node",
    "node_count",
    "cpu_per_node",
    "memory_per_node",
    "memory_choices",
    "image",
    "images",
    "description",
)
#: the fields only facility admins see: how a resource is scheduled and who may use it
ADMIN_RESOURCE_FIELDS = (
    "node_selector",
    "tolerations",
    "extended_resource",
    "image_pattern",
    "allowed_groups",
)
RESOURCE_FIELDS = {*PUBLIC_RESOURCE_FIELDS, *ADMIN_RESOURCE_FIELDS}


class RegistryError(ValueError):
    """A registry entry that cannot be accepted; ``str()`` names the entry and the field."""


def parse_quantity(value: object) -> int:
    """Bytes of a Kubernetes memory quantity (``"16Gi"``, ``"500M"``), else ``ValueError``."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a quantity string such as '16Gi'")
    return _parse_quantity(value)


@functools.lru_cache(maxsize=4096)
def _parse_quantity(value: str) -> int:
    match = QUANTITY_RE.fullmatch(value)
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity such as '16Gi' or '512Mi'")
    return int(float(match.group(1)) * _SUFFIX[match.group(2)])


@dataclass(frozen=True)
class Provider:
    """An institution that lends resources, with people to contact about them."""

    name: str
    institution: str
    contacts: tuple[str, ...] = ()
    public_report: str = "off"


@dataclass(frozen=True)
class Resource:
    """A node pool: identical nodes of one kind, and the groups that may use it."""

    name: str
    provider: str
    site: str
    kind: str
    image: str
    cpu_per_node: float
    memory_per_node: str
    node_count: int = 1
    count_per_node: int = 0
    accelerator: str = ""
    extended_resource: str | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    images: tuple[str, ...] = ()
    image_pattern: str | None = None
    memory_choices: tuple[str, ...] = ()
    allowed_groups: tuple[str, ...] = ()
    description: str = ""

    @property
    def memory_bytes(self) -> int:
        return parse_quantity(self.memory_per_node)

    @property
    def is_accelerated(self) -> bool:
        return self.kind != "cpu"

    def payable_by(self, group: str) -> bool:
        """Whether ``group`` may pay for this resource: access and payment must agree.

        A resource opened to a group may be charged to that group or any group below it;
        one opened to everyone (:data:`afhub.devices.EVERYONE`, ``:everyone``) to any group.
        """
        return any(
            allowed == ":everyone" or group == allowed or group.startswith(allowed + "/")
            for allowed in self.allowed_groups
        )

    def payer_refusal(self, group: str) -> str | None:
        """None when ``group`` may pay for this resource, else a sentence that says which
        groups may (for a 403 body)."""
        if self.payable_by(group):
            return None
        payers = ", ".join(f"{g!r}" for g in self.allowed_groups)
        return (
            f"resource {self.name!r} is open to {payers} and can only be charged to "
            f"{'that group' if len(self.allowed_groups) == 1 else 'one of those groups'} "
            f"or a group below it, not to {group!r}: choose such a group under "
            f"'Charge to group'"
        )


@dataclass(frozen=True)
class Registry:
    """Providers and resources by name, in file order."""

    providers: Mapping[str, Provider]
    resources: Mapping[str, Resource]

    def allowed(self, user_groups: set[str] | frozenset[str]) -> list[Resource]:
        """Resources usable by someone in ``user_groups`` (groups inherit down the tree)."""
        expanded = expand_groups(user_groups)
        return [r for r in self.resources.values() if not expanded.isdisjoint(r.allowed_groups)]


def expand_groups(user_groups) -> frozenset[str]:
    """The user's groups and all their ancestors: ``atlas/higgs`` gives ``atlas`` too."""
    out: set[str] = set()
    for group in user_groups:
        if not isinstance(group, str):
            continue
        while group and group not in out:  # stop at an ancestor already added
            out.add(group)
            group = group.rpartition("/")[0]
    return frozenset(out)


def _err(where: str, fieldname: str, message: str) -> RegistryError:
    return RegistryError(f"{where}: field '{fieldname}' {message}")


def _name(where: str, value: Any, fieldname: str = "name") -> str:
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise _err(
            where,
            fieldname,
            f"is {value!r}; use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit",
        )
    return value


def _text(where: str, entry: Mapping, fieldname: str, required: bool = True) -> str:
    value = entry.get(fieldname, None)
    if value is None:
        if required:
            raise _err(where, fieldname, "is required")
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise _err(where, fieldname, f"must be a non-empty string, not {value!r}")
    if any(ord(c) < 32 for c in value):
        raise _err(where, fieldname, "must not contain control characters")
    return value


def _count(where: str, entry: Mapping, fieldname: str, default: int | None = None) -> int:
    value = entry.get(fieldname, default)
    if value is None:
        raise _err(where, fieldname, "is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _err(where, fieldname, f"must be a whole number, not {value!r}")
    if value < 0:
        raise _err(where, fieldname, f"must not be negative (got {value})")
    return value


def _image(where: str, value: Any, fieldname: str) -> str:
    if not isinstance(value, str) or len(value) > 255 or not IMAGE_RE.fullmatch(value):
        raise _err(where, fieldname, f"is not a container image reference: {value!r}")
    return value


def _tolerations(where: str, value: Any) -> tuple[dict, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _err(where, "tolerations", "must be a list of tolerations")
    out = []
    for i, tol in enumerate(value):
        label = f"tolerations[{i}]"
        if not isinstance(tol, Mapping):
            raise _err(where, label, "must be a mapping with key, operator, value, effect")
        unknown = set(tol) - TOLERATION_KEYS
        if unknown:
            raise _err(where, label, f"has unknown keys {sorted(unknown)}")
        operator = tol.get("operator", "Equal")
        if operator not in TOLERATION_OPERATORS:
            raise _err(where, label, f"operator must be Exists or Equal, not {operator!r}")
        key = tol.get("key")
        if key is not None and (not isinstance(key, str) or not LABEL_KEY_RE.fullmatch(key)):
            raise _err(where, label, f"key {key!r} is not a valid label key")
        if key is None and operator != "Exists":
            raise _err(where, label, "without a key must use operator Exists")
        val = tol.get("value")
        if val is not None:
            if operator == "Exists":
                raise _err(where, label, "with operator Exists must not have a value")
            if not isinstance(val, str) or not LABEL_VALUE_RE.fullmatch(val):
                raise _err(where, label, f"value {val!r} is not a valid label value")
        effect = tol.get("effect")
        if effect is not None and effect not in TOLERATION_EFFECTS:
            raise _err(where, label, f"effect must be one of {TOLERATION_EFFECTS}, not {effect!r}")
        seconds = tol.get("tolerationSeconds")
        if seconds is not None:
            if effect != "NoExecute":
                raise _err(where, label, "tolerationSeconds needs effect NoExecute")
            if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 0:
                raise _err(where, label, "tolerationSeconds must be a whole number >= 0")
        out.append(dict(tol))
    return tuple(out)


def _node_selector(where: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _err(where, "node_selector", "must be a mapping of label to value")
    for key, val in value.items():
        if not isinstance(key, str) or not LABEL_KEY_RE.fullmatch(key) or len(key) > 316:
            raise _err(where, "node_selector", f"key {key!r} is not a valid label key")
        if not isinstance(val, str) or not LABEL_VALUE_RE.fullmatch(val):
            raise _err(where, "node_selector", f"value {val!r} of {key!r} is not a label value")
    return dict(value)


def _anchored_pattern(where: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("^") or not value.endswith("$"):
        raise _err(where, "image_pattern", "must be a regular expression anchored with ^ and $")
    if value.endswith("\\$"):
        raise _err(where, "image_pattern", "ends with an escaped '$', so it is not anchored")
    try:
        re.compile(value)
    except re.error as exc:
        raise _err(where, "image_pattern", f"is not a valid regular expression: {exc}") from None
    return value


def _checked_entry(entry: Any, kind: str, index: int, fields: set[str]) -> str:
    """Where the entry is (for messages), once it is a mapping of known fields."""
    if not isinstance(entry, Mapping):
        raise RegistryError(f"{kind}s[{index}]: must be a mapping")
    where = f"{kind} {entry.get('name')!r}"
    unknown = set(entry) - fields
    if unknown:
        raise RegistryError(f"{where}: unknown fields {sorted(map(str, unknown))}")
    return where


def parse_provider(entry: Any, index: int) -> Provider:
    where = _checked_entry(entry, "provider", index, PROVIDER_FIELDS)
    name = _name(where, entry.get("name"))
    institution = _text(where, entry, "institution")
    contacts = entry.get("contacts") or []
    if not isinstance(contacts, list) or not all(
        isinstance(c, str) and c.strip() for c in contacts
    ):
        raise _err(where, "contacts", "must be a list of strings (emails or names)")
    public = entry.get("public_report", "off")
    if public not in PUBLIC_REPORTS:
        raise _err(where, "public_report", f"must be one of {', '.join(PUBLIC_REPORTS)}")
    return Provider(
        name=name, institution=institution, contacts=tuple(contacts), public_report=public
    )


def _cpu_per_node(where: str, entry: Mapping) -> int | float:
    cpu = entry.get("cpu_per_node")
    if isinstance(cpu, bool) or not isinstance(cpu, int | float) or not 0 < cpu < 10**5:
        raise _err(where, "cpu_per_node", f"must be a positive number of cores, not {cpu!r}")
    return cpu


def _memory(where: str, entry: Mapping) -> tuple[str, list]:
    """``memory_per_node`` (more than zero) and the ``memory_choices`` within it."""
    memory = entry.get("memory_per_node")
    try:
        if parse_quantity(memory) <= 0:
            raise ValueError(f"{memory!r} must be more than zero")
    except ValueError as exc:
        raise _err(where, "memory_per_node", str(exc)) from None
    memory_choices = entry.get("memory_choices") or []
    if not isinstance(memory_choices, list):
        raise _err(where, "memory_choices", "must be a list of quantities")
    for m in memory_choices:
        try:
            size = parse_quantity(m)
        except ValueError as exc:
            raise _err(where, "memory_choices", str(exc)) from None
        if not 0 < size <= parse_quantity(memory):
            raise _err(where, "memory_choices", f"{m!r} is not within memory_per_node {memory}")
    return str(memory), memory_choices


def _check_devices(where: str, kind: str, extended: object, count: int) -> None:
    """A cpu resource has no devices; a gpu or fpga resource names its extended resource
    (of its kind) and has at least one device per node."""
    if kind == "cpu":
        if extended is not None:
            raise _err(where, "extended_resource", "is only for gpu and fpga resources")
        if count:
            raise _err(where, "count_per_node", "must be 0 for a cpu resource")
        return
    if not isinstance(extended, str) or not EXTENDED_RESOURCE_RE.fullmatch(extended):
        raise _err(
            where,
            "extended_resource",
            f"is {extended!r}; a {kind} resource needs one such as nvidia.com/gpu, "
            "nvidia.com/mig-1g.10gb, amd.com/gpu or xilinx.com/fpga-<name>",
        )
    if kind == "fpga" and not extended.startswith("xilinx.com/fpga-"):
        raise _err(where, "extended_resource", f"{extended!r} is not an FPGA resource")
    if kind == "gpu" and extended.startswith("xilinx.com/"):
        raise _err(where, "extended_resource", f"{extended!r} is not a GPU resource")
    if count < 1:
        raise _err(where, "count_per_node", f"must be at least 1 for a {kind} resource")


def _list_field(where: str, entry: Mapping, field: str, what: str) -> list:
    value = entry.get(field) or []
    if not isinstance(value, list):
        raise _err(where, field, f"must be a list of {what}")
    return value


def _allowed_groups(where: str, entry: Mapping) -> list:
    groups = _list_field(where, entry, "allowed_groups", "group paths")
    for group in groups:
        try:
            validate_path(group)
        except InvalidGroupName as exc:
            raise _err(where, "allowed_groups", str(exc)) from None
    return groups


def parse_resource(entry: Any, index: int, providers: Mapping[str, Provider]) -> Resource:
    where = _checked_entry(entry, "resource", index, RESOURCE_FIELDS)
    name = _name(where, entry.get("name"))
    provider = entry.get("provider")
    if not isinstance(provider, str) or provider not in providers:
        raise _err(where, "provider", f"is {provider!r}, not one of the declared providers")
    site = _text(where, entry, "site")
    kind = entry.get("kind")
    if kind not in KINDS:
        raise _err(where, "kind", f"is {kind!r}; it must be one of {', '.join(KINDS)}")
    node_count = _count(where, entry, "node_count", 1)
    count = _count(where, entry, "count_per_node", 0)
    cpu = _cpu_per_node(where, entry)
    memory, memory_choices = _memory(where, entry)
    extended = entry.get("extended_resource")
    accelerator = _text(where, entry, "accelerator", required=kind != "cpu")
    _check_devices(where, kind, extended, count)
    images = _list_field(where, entry, "images", "image references")
    groups = _allowed_groups(where, entry)
    description = _text(where, entry, "description", required=False)
    return Resource(
        name=name,
        provider=provider,
        site=site,
        kind=kind,
        image=_image(where, entry.get("image"), "image"),
        images=tuple(_image(where, i, "images") for i in images),
        image_pattern=_anchored_pattern(where, entry.get("image_pattern")),
        cpu_per_node=cpu,
        memory_per_node=memory,
        memory_choices=tuple(memory_choices),
        node_count=node_count,
        count_per_node=count,
        accelerator=accelerator,
        extended_resource=extended,
        node_selector=_node_selector(where, entry.get("node_selector")),
        tolerations=_tolerations(where, entry.get("tolerations")),
        allowed_groups=tuple(dict.fromkeys(groups)),
        description=description,
    )


def parse_providers(entries: list) -> dict[str, Provider]:
    """The providers of a registry by name; raises RegistryError (a duplicate name too)."""
    providers: dict[str, Provider] = {}
    for i, entry in enumerate(entries):
        provider = parse_provider(entry, i)
        if provider.name in providers:
            raise RegistryError(f"provider {provider.name!r}: duplicate name")
        providers[provider.name] = provider
    return providers


def document_sections(data: object) -> Mapping:
    """The top level of a registry document: a mapping of ``providers`` and ``resources``
    only (``None`` is the empty registry); raises RegistryError."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise RegistryError("registry must be a mapping with 'providers' and 'resources'")
    unknown = set(data) - {"providers", "resources"}
    if unknown:
        raise RegistryError(f"registry: unknown top-level keys {sorted(map(str, unknown))}")
    return data


def parse_registry(source: str | Mapping | None) -> Registry:
    """Parse and validate the registry (YAML text or a mapping); raises RegistryError."""
    if isinstance(source, str):
        try:
            data = yaml.safe_load(source)
        except yaml.YAMLError as exc:
            raise RegistryError(f"registry is not valid YAML: {exc}") from None
    else:
        data = source
    data = document_sections(data)
    provider_entries = data.get("providers") or []
    resource_entries = data.get("resources") or []
    if not isinstance(provider_entries, list) or not isinstance(resource_entries, list):
        raise RegistryError("registry: 'providers' and 'resources' must be lists")
    providers = parse_providers(provider_entries)
    resources: dict[str, Resource] = {}
    for i, entry in enumerate(resource_entries):
        resource = parse_resource(entry, i, providers)
        if resource.name in resources:
            raise RegistryError(f"resource {resource.name!r}: duplicate name")
        resources[resource.name] = resource
    return Registry(providers=providers, resources=resources)


def load_registry(path: str) -> Registry:
    """Parse the registry YAML file at ``path``."""
    with open(path, encoding="utf-8") as fh:
        return parse_registry(fh.read())


def check_update(old: Registry, new: Registry, in_use: Mapping[str, int]) -> None:
    """Refuse a registry change that would orphan running servers.

    ``in_use`` maps a resource name to the number of servers running on it. A resource
    with running servers may not be removed, nor change its kind, extended resource or
    provider; stop (drain) its servers first. Raises :class:`RegistryError`.
    """
    for name, running in sorted(in_use.items()):
        if running <= 0 or name not in old.resources:
            continue
        before = old.resources[name]
        after = new.resources.get(name)
        if after is None:
            raise RegistryError(
                f"resource {name!r}: {running} server(s) still run on it; stop them before "
                "removing the resource"
            )
        for fieldname in ("kind", "extended_resource", "provider"):
            if getattr(before, fieldname) != getattr(after, fieldname):
                raise RegistryError(
                    f"resource {name!r}: field '{fieldname}' cannot change while "
                    f"{running} server(s) run on it"
                )
