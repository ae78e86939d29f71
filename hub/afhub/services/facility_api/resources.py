"""``/api/resources``, ``/api/providers``, ``/api/registry``: the resource registry.

Everyone reads the resources their groups may use (groups inherit down the tree) and the
providers; facility admins read everything and change the registry. A resource the caller
may not use answers 404 exactly like an unknown one, so its existence does not leak.
Entries added here have source ``api``; entries of the registry file (``AFHUB_REGISTRY``)
are changed in that file.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from afhub.groups.tree import PermissionDenied
from afhub.registry.model import PUBLIC_RESOURCE_FIELDS, Registry, expand_groups
from afhub.services.facility_api.base import FacilityHandler
from afhub.services.kit.errors import ApiError
from afhub.stores.registry import API, SOURCES

#: a whole registry document (PUT /api/registry): a few hundred resources
MAX_DOCUMENT_BYTES = 1024 * 1024


def admin_view(record: dict[str, Any]) -> dict[str, Any]:
    """What a facility admin sees of a registry entry: the whole entry, where it comes from
    and when it was added and last changed."""
    view = dict(record["entry"])
    view["source"] = record["source"]
    view["created_at"] = record["created_at"].isoformat()
    view["updated_at"] = record["updated_at"].isoformat()
    return view


class RegistryHandler(FacilityHandler):
    """Shared by the registry handlers: admin checks, strict JSON, entry views."""

    def require_admin(self, what: str) -> None:
        if not self.actor.is_facility_admin:
            raise PermissionDenied(f"only facility admins may {what}")

    def json_body(self, *, required: bool = True) -> dict[str, Any]:
        """The body as a JSON object (required here), within the base's limits."""
        return super().json_body(required=required)

    async def put_entry(
        self, name: str, kind: str, get: Callable[..., Any], add: Callable[..., Any]
    ) -> tuple[Any, int]:
        """Create or replace the ``kind`` named ``name`` in the URL, from the whole entry in
        the body (its ``name``, when given, must be the URL's): what ``add`` stored, and
        200 (replaced) or 201 (created)."""
        self.require_admin(f"change {kind}s")
        entry = self.json_body()
        if entry.setdefault("name", name) != name:
            raise ApiError(400, f"field 'name' is {entry['name']!r} but the URL names {name!r}")
        existed = await self.call(get, name) is not None
        stored = await self.call(add, entry, source=API, replace=True)
        return stored, 200 if existed else 201

    def source_argument(self) -> str | None:
        source = self.get_query_argument("source", None)
        if source in (None, ""):
            return None
        if source not in SOURCES:
            raise ApiError(400, f"source must be one of {', '.join(SOURCES)}")
        return source

    async def visible(self) -> tuple[Registry, list[dict[str, Any]]]:
        """The registry and the records of the resources the caller may see, in order."""
        registry = await self.call(self.stores.registry.load)
        records = await self.call(self.stores.registry.resource_records)
        if self.actor.is_facility_admin:
            return registry, records
        allowed = {r.name for r in registry.allowed(set(self.actor.roles))}
        return registry, [r for r in records if r["entry"].get("name") in allowed]

    def resource_view(
        self,
        record: dict[str, Any],
        registry: Registry,
        running: dict[str, int],
        held: dict[str, int],
    ) -> dict[str, Any]:
        entry = record["entry"]
        name = entry.get("name")
        if self.actor.is_facility_admin:
            view = admin_view(record)
            view["servers_running"] = running.get(name, 0)
        else:
            view = {k: entry[k] for k in PUBLIC_RESOURCE_FIELDS if k in entry}
            mine = expand_groups(set(self.actor.roles))
            view["usable_through"] = sorted(mine & set(entry.get("allowed_groups") or []))
        resource = registry.resources.get(name)
        if resource is not None:
            view.setdefault("node_count", resource.node_count)
            view.setdefault("count_per_node", resource.count_per_node)
            view["accelerators_total"] = resource.count_per_node * resource.node_count
            view["accelerators_free"] = max(0, view["accelerators_total"] - held.get(name, 0))
            provider = registry.providers.get(resource.provider)
            if provider is not None:
                view["institution"] = provider.institution
        return view

    async def one_view(self, name: str) -> dict[str, Any]:
        """The caller's view of resource ``name``; 404 (the same for unknown and not
        allowed) otherwise."""
        registry, records = await self.visible()
        for record in records:
            if record["entry"].get("name") == name:
                running = await self.call(self.stores.registry.in_use)
                held = await self.call(self.stores.devices.counts)
                return self.resource_view(record, registry, running, held)
        raise ApiError(404, f"no resource named {name!r} that you may use")


class ResourcesHandler(RegistryHandler):
    async def get(self) -> None:
        """Resources the caller may use (facility admins: all, with who may use them)."""
        registry, records = await self.visible()
        running = await self.call(self.stores.registry.in_use) if records else {}
        held = await self.call(self.stores.devices.counts) if records else {}
        views = [self.resource_view(r, registry, running, held) for r in records]
        self.send({"resources": views})

    async def post(self) -> None:
        """Add a resource: the body is its registry entry (docs/resources.md)."""
        self.require_admin("add resources")
        entry = self.json_body()
        await self.call(self.stores.registry.add_resource, entry, source=API)
        self.send(await self.one_view(entry["name"]), status=201)


class ResourceHandler(RegistryHandler):
    async def get(self, name: str) -> None:
        self.send(await self.one_view(name))

    async def put(self, name: str) -> None:
        """Create or replace resource ``name``; the body is its whole entry."""
        registry = self.stores.registry
        _, status = await self.put_entry(
            name, "resource", registry.get_resource, registry.add_resource
        )
        self.send(await self.one_view(name), status=status)

    async def delete(self, name: str) -> None:
        """Remove a resource; refused (409) while servers run on it."""
        self.require_admin("remove resources")
        await self.call(self.stores.registry.remove_resource, name, source=API)
        self.send({"deleted": name})


class ProvidersHandler(RegistryHandler):
    async def get(self) -> None:
        records = await self.call(self.stores.registry.provider_records)
        admin = self.actor.is_facility_admin
        providers = [admin_view(r) if admin else dict(r["entry"]) for r in records]
        self.send({"providers": providers})

    async def post(self) -> None:
        """Add a provider: ``{"name", "institution", "contacts"}``."""
        self.require_admin("add providers")
        entry = self.json_body()
        stored = await self.call(self.stores.registry.add_provider, entry, source=API)
        self.send(stored, status=201)


class ProviderHandler(RegistryHandler):
    async def get(self, name: str) -> None:
        entry = await self.call(self.stores.registry.get_provider, name)
        if entry is None:
            raise ApiError(404, f"no provider named {name!r}")
        self.send(entry)

    async def put(self, name: str) -> None:
        """Create or replace provider ``name``."""
        registry = self.stores.registry
        stored, status = await self.put_entry(
            name, "provider", registry.get_provider, registry.add_provider
        )
        self.send(stored, status=status)

    async def delete(self, name: str) -> None:
        """Remove a provider; refused (409) while resources reference it."""
        self.require_admin("remove providers")
        await self.call(self.stores.registry.remove_provider, name, source=API)
        self.send({"deleted": name})


class RegistryDocumentHandler(RegistryHandler):
    def max_body_bytes(self) -> int:
        return MAX_DOCUMENT_BYTES

    async def get(self) -> None:
        """The whole registry (``?source=api|file``: only those entries)."""
        self.require_admin("read the whole registry")
        source = self.source_argument()
        self.send(await self.call(self.stores.registry.document, source))

    async def put(self) -> None:
        """Make the API-managed entries exactly this document's (all or nothing); the
        registry file's entries stay."""
        self.require_admin("replace the registry")
        document = self.json_body()
        summary = await self.call(self.stores.registry.apply, document, source=API)
        self.send({"revision": await self.call(self.stores.registry.revision), **summary})
