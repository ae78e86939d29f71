"""The resource registry (providers and resources), in the facility database.

Each provider and resource is stored as its entry in the YAML shape of
``docs/resources.md`` (JSON text), with where it came from (``source``): ``"api"`` for the
facility API and the ``afhub resources`` CLI, ``"file"`` for the declarative registry file
(``AFHUB_REGISTRY``, applied at every hub start). Every write validates the whole registry
that would result with :func:`afhub.registry.model.parse_registry` and refuses, with
:func:`~afhub.registry.model.check_update`, a change that would orphan running servers;
then it bumps a revision number, so that :meth:`RegistryStore.load` (called for every
profile build) costs one tiny query while nothing changed.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from afhub.registry.model import (
    Registry,
    RegistryError,
    Resource,
    check_update,
    document_sections,
    parse_providers,
    parse_resource,
)
from afhub.stores.database import Database
from afhub.stores.errors import AlreadyExists, Busy, NotFound, StoreError
from afhub.stores.models import (
    LedgerInterval,
    ProviderRow,
    RegistryState,
    ResourceRow,
    utcnow,
)

API, FILE = "api", "file"
#: parsed entries remembered (a few registries' worth)
_MAX_PARSED = 5000
SOURCES = (API, FILE)
_HOW_TO_CHANGE = {
    API: "change it through the facility API or 'afhub resources'",
    FILE: "change it in the registry file (AFHUB_REGISTRY) and restart the hub",
}


class RegistryInvalid(StoreError):
    """The registry that would result breaks a rule; the message names entry and field."""

    status = 400


class RegistryBusy(Busy):
    """The change would orphan running servers (or resources of a provider)."""


class ManagedElsewhere(StoreError):
    """The entry belongs to the other source (the registry file or the API)."""

    status = 409


@dataclass
class _Item:
    entry: dict[str, Any]
    source: str
    position: int
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass
class _Working:
    """The registry being changed: items by name, in document order."""

    providers: dict[str, _Item] = field(default_factory=dict)
    resources: dict[str, _Item] = field(default_factory=dict)

    def next_position(self) -> int:
        items = [*self.providers.values(), *self.resources.values()]
        return max((i.position for i in items), default=0) + 1

    def document(self, source: str | None = None) -> dict[str, list[dict[str, Any]]]:
        def entries(items: dict[str, _Item]) -> list[dict[str, Any]]:
            ordered = sorted(items.items(), key=lambda kv: (kv[1].position, kv[0]))
            return [i.entry for _, i in ordered if source is None or i.source == source]

        return {"providers": entries(self.providers), "resources": entries(self.resources)}


def _check_source(source: str) -> str:
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, not {source!r}")
    return source


def _entry(kind: str, entry: Any) -> dict[str, Any]:
    """A copy of ``entry`` that is a JSON object with a string ``name``."""
    if not isinstance(entry, Mapping):
        raise RegistryInvalid(f"a {kind} entry must be a mapping (a JSON object)")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise RegistryInvalid(f"{kind} entry: field 'name' is required (a string)")
    try:
        text = json.dumps(dict(entry), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryInvalid(
            f"{kind} {name!r}: holds a value that is not plain text, a number, a list or a "
            f"mapping ({exc})"
        ) from None
    return json.loads(text)


def _document_entries(document: Any) -> tuple[list[dict], list[dict]]:
    try:
        document = document_sections(document)
    except RegistryError as exc:
        raise RegistryInvalid(str(exc)) from None
    out = []
    for kind in ("provider", "resource"):
        entries = document.get(kind + "s") or []
        if not isinstance(entries, list):
            raise RegistryInvalid(f"registry: '{kind}s' must be a list")
        converted = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise RegistryInvalid(f"{kind}s[{i}]: must be a mapping")
            converted.append(_entry(kind, entry))
        names = [e["name"] for e in converted]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise RegistryInvalid(f"{kind} {duplicates[0]!r}: duplicate name")
        out.append(converted)
    return out[0], out[1]


def _managed_elsewhere(kind: str, name: str, item: _Item) -> ManagedElsewhere:
    origin = "the registry file" if item.source == FILE else "the facility API"
    return ManagedElsewhere(
        f"{kind} {name!r} comes from {origin} (source '{item.source}'); "
        f"{_HOW_TO_CHANGE[item.source]}"
    )


class RegistryStore:
    """Providers and resources: read as a parsed :class:`Registry`, written entry by entry
    (:meth:`add_resource`, ...) or as a whole document per source (:meth:`apply`)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: tuple[int, Registry] | None = None
        self._cache_lock = threading.Lock()
        self._revision_lock = threading.Lock()
        self._revision_conn = None
        #: parsed resources by their entry (JSON, sorted keys)
        self._parsed: dict[str, Resource] = {}

    # --- parsing ----------------------------------------------------------------------------

    def _parse(self, document: Mapping[str, Any]) -> Registry:
        """:func:`~afhub.registry.model.parse_registry` of a well-formed document (from
        :class:`_Working`). Raises :class:`RegistryInvalid`."""
        texts = [json.dumps(e, allow_nan=False) for e in document.get("resources") or []]
        return self._parse_stored(document.get("providers") or [], texts)

    def _parse_stored(self, providers_in: list[dict[str, Any]], texts: list[str]) -> Registry:
        """The registry of these providers and resources (as stored: JSON text), parsed
        as :func:`~afhub.registry.model.parse_registry` does, remembering each parsed
        resource by its text: after a change only the entries that changed are read and
        validated again (validating 200 resources takes ~100 ms on a loaded machine)."""
        parsed = self._parsed
        if len(parsed) > _MAX_PARSED:
            parsed.clear()
        try:
            providers = parse_providers(providers_in)
            resources: dict[str, Resource] = {}
            for i, text in enumerate(texts):
                resource = parsed.get(text)
                if resource is None or resource.provider not in providers:
                    entry = json.loads(text)
                    name = entry.get("provider")
                    if name is not None and not isinstance(name, str):
                        raise RegistryError(
                            f"resource {entry.get('name')!r}: field 'provider' must be a "
                            f"provider's name (a string), not {type(name).__name__}"
                        )
                    resource = parse_resource(entry, i, providers)
                    parsed[text] = resource
                if resource.name in resources:
                    raise RegistryError(f"resource {resource.name!r}: duplicate name")
                resources[resource.name] = resource
        except RegistryError as exc:
            raise RegistryInvalid(str(exc)) from None
        except (TypeError, ValueError, AttributeError):
            # a value of a type the model does not expect; never a 500
            raise RegistryInvalid(
                "registry refused: a field of an entry has the wrong type (see docs/resources.md)"
            ) from None
        return Registry(providers=providers, resources=resources)

    # --- reading ----------------------------------------------------------------------------

    def revision(self) -> int:
        """A number every write bumps (0 for a registry never written).

        :meth:`load` runs this for every profile build, so it is one plain query: on a
        pooled DB-API connection for SQLite; on PostgreSQL on a connection of its own in
        autocommit mode (no pool ping, no rollback: one round trip), reopened once when
        the server went away."""
        if self.db.is_sqlite:
            conn = self.db.engine.raw_connection()
            try:
                return _fetch_revision(conn)
            finally:
                conn.close()  # back to the pool
        with self._revision_lock:
            for attempt in (1, 2):
                if self._revision_conn is None:
                    fairy = self.db.engine.raw_connection()
                    conn = fairy.driver_connection
                    fairy.detach()  # ours alone, outside the pool
                    conn.rollback()
                    conn.autocommit = True
                    self._revision_conn = conn
                try:
                    return _fetch_revision(self._revision_conn)
                except Exception:
                    self._close_revision_connection()
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _close_revision_connection(self) -> None:
        conn, self._revision_conn = self._revision_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # already broken
                conn.close()

    def close(self) -> None:
        """Close the connection :meth:`revision` keeps (PostgreSQL)."""
        with self._revision_lock:
            self._close_revision_connection()

    def load(self) -> Registry:
        """The current registry, parsed; one small query when unchanged since the last call."""
        revision = self.revision()
        cached = self._cache
        if cached is not None and cached[0] == revision:
            return cached[1]
        with self._cache_lock:
            cached = self._cache
            if cached is not None and cached[0] == revision:
                return cached[1]
            # read the revision before the rows: rows newer than the revision only cause
            # one more reload later, never a stale cache
            with self.db.read() as session:
                revision = int(session.execute(_REVISION).scalar() or 0)
                providers = _entries(session, ProviderRow)
                texts = _texts(session, ResourceRow)
            registry = self._parse_stored(providers, texts)
            self._cache = (revision, registry)
            return registry

    def document(self, source: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """The registry in the YAML shape ``{"providers": [...], "resources": [...]}``;
        only the entries of ``source`` when given."""
        if source is not None:
            _check_source(source)
        with self.db.read() as session:
            return self._working(session).document(source)

    def get_resource(self, name: str) -> dict[str, Any] | None:
        """A resource's entry (YAML shape), or ``None``."""
        with self.db.read() as session:
            row = session.get(ResourceRow, name) if isinstance(name, str) else None
            return None if row is None else json.loads(row.entry)

    def get_provider(self, name: str) -> dict[str, Any] | None:
        with self.db.read() as session:
            row = session.get(ProviderRow, name) if isinstance(name, str) else None
            return None if row is None else json.loads(row.entry)

    def resource_records(self) -> list[dict[str, Any]]:
        """Every resource: ``{"entry", "source", "created_at", "updated_at"}``, in order."""
        return self._records(ResourceRow)

    def provider_records(self) -> list[dict[str, Any]]:
        return self._records(ProviderRow)

    def _records(self, table) -> list[dict[str, Any]]:
        with self.db.read() as session:
            rows = session.scalars(select(table).order_by(table.position, table.name)).all()
            return [
                {
                    "entry": json.loads(r.entry),
                    "source": r.source,
                    "created_at": r.created_at,
                    "updated_at": r.updated_at,
                }
                for r in rows
            ]

    def in_use(self) -> dict[str, int]:
        """Open server charges by resource name (servers starting or running)."""
        with self.db.read() as session:
            return _in_use(session)

    # --- writing ----------------------------------------------------------------------------

    def add_provider(
        self, entry: Mapping[str, Any], *, source: str = API, replace: bool = False
    ) -> dict[str, Any]:
        """Add a provider (``replace``: or change the one of that name). Returns the entry."""
        return self._put("provider", entry, source=source, replace=replace)

    def add_resource(
        self, entry: Mapping[str, Any], *, source: str = API, replace: bool = False
    ) -> dict[str, Any]:
        """Add a resource (``replace``: or change the one of that name). Returns the entry.

        Refused: an entry that breaks a rule (400), a name taken without ``replace`` (409),
        an entry of the other source (409), a change of kind, extended resource or provider
        while servers run on it (409)."""
        return self._put("resource", entry, source=source, replace=replace)

    def remove_resource(self, name: str, *, source: str | None = API) -> None:
        """Remove a resource; refused (409) while servers run on it, or when it comes from
        another source than ``source`` (``None``: any source)."""
        self._remove("resource", name, source)

    def remove_provider(self, name: str, *, source: str | None = API) -> None:
        """Remove a provider; refused (409) while resources reference it."""
        self._remove("provider", name, source)

    def apply(self, document: Any, *, source: str = FILE) -> dict[str, list[str]]:
        """Make the entries of ``source`` exactly the document's (all or nothing).

        Entries of the other source stay. A document entry whose name belongs to the other
        source is accepted only when it is identical (so a document read back from
        :meth:`document` applies unchanged); otherwise the whole document is refused.
        Returns the names ``added``, ``changed``, ``removed`` and ``unchanged``.
        """
        _check_source(source)
        providers, resources = _document_entries(document)
        summary: dict[str, list[str]] = {"added": [], "changed": [], "removed": [], "unchanged": []}

        def mutate(working: _Working) -> None:
            for kind, entries, items in (
                ("provider", providers, working.providers),
                ("resource", resources, working.resources),
            ):
                wanted = {e["name"]: e for e in entries}
                for name in [n for n, i in items.items() if i.source == source]:
                    if name not in wanted:
                        del items[name]
                        summary["removed"].append(f"{kind} {name}")
                for entry in entries:
                    name = entry["name"]
                    item = items.get(name)
                    if item is None:
                        items[name] = _Item(entry, source, working.next_position())
                        summary["added"].append(f"{kind} {name}")
                    elif item.source != source:
                        if item.entry != entry:
                            raise _managed_elsewhere(kind, name, item)
                        summary["unchanged"].append(f"{kind} {name}")
                    elif item.entry != entry:
                        item.entry = entry
                        summary["changed"].append(f"{kind} {name}")
                    else:
                        summary["unchanged"].append(f"{kind} {name}")

        self._write(mutate)
        return summary

    def _put(self, kind: str, entry: Any, *, source: str, replace: bool) -> dict[str, Any]:
        _check_source(source)
        entry = _entry(kind, entry)
        name = entry["name"]

        def mutate(working: _Working) -> None:
            items = working.providers if kind == "provider" else working.resources
            item = items.get(name)
            if item is None:
                items[name] = _Item(entry, source, working.next_position())
                return
            if not replace:
                raise AlreadyExists(
                    f"{kind} {name!r} already exists; replace it (PUT, or "
                    f"'afhub resources add --replace') or remove it first"
                )
            if item.source != source:
                raise _managed_elsewhere(kind, name, item)
            item.entry = entry

        self._write(mutate)
        return entry

    def _remove(self, kind: str, name: str, source: str | None) -> None:
        if source is not None:
            _check_source(source)

        def mutate(working: _Working) -> None:
            items = working.providers if kind == "provider" else working.resources
            item = items.get(name) if isinstance(name, str) else None
            if item is None:
                raise NotFound(f"no {kind} named {name!r}")
            if source is not None and item.source != source:
                raise _managed_elsewhere(kind, name, item)
            if kind == "provider":
                users = sorted(
                    r for r, i in working.resources.items() if i.entry.get("provider") == name
                )
                if users:
                    raise RegistryBusy(
                        f"provider {name!r} still provides {len(users)} resource(s) "
                        f"({', '.join(users[:10])}); remove them first"
                    )
            del items[name]

        self._write(mutate)

    def _write(self, mutate: Callable[[_Working], None]) -> int:
        """Run ``mutate`` on the current registry, validate the result, store what changed
        and bump the revision, in one transaction. Returns the new revision."""
        with self.db.write() as session:
            revision = self._lock(session)
            working = self._working(session)
            before = working.document()
            snapshot = {
                kind: {n: (i.entry, i.source, i.position) for n, i in items.items()}
                for kind, items in (
                    ("provider", working.providers),
                    ("resource", working.resources),
                )
            }
            mutate(working)
            new = self._parse(working.document())
            try:
                old = self._parse(before)
            except RegistryInvalid:  # pragma: no cover - stored registries were validated
                old = Registry(providers={}, resources={})
            try:
                check_update(old, new, _in_use(session))
            except RegistryError as exc:
                raise RegistryBusy(str(exc)) from None
            changed = self._store(session, snapshot["provider"], working.providers, ProviderRow)
            changed |= self._store(session, snapshot["resource"], working.resources, ResourceRow)
            if not changed:
                return revision
            session.execute(
                update(RegistryState).where(RegistryState.id == 1).values(revision=revision + 1)
            )
        return revision + 1

    @staticmethod
    def _lock(session: Session) -> int:
        """The revision, with the state row locked (PostgreSQL; SQLite writers already run
        one at a time); creates the row when missing."""
        query = select(RegistryState.revision).where(RegistryState.id == 1)
        if session.bind.dialect.name == "postgresql":
            query = query.with_for_update()
        revision = session.execute(query).scalar()
        if revision is None:
            session.execute(insert(RegistryState).values(id=1, revision=0))
            revision = 0
        return int(revision)

    @staticmethod
    def _store(session: Session, before: dict, items: dict[str, _Item], table) -> bool:
        now = utcnow()
        changed = False
        gone = [name for name in before if name not in items]
        if gone:
            session.execute(delete(table).where(table.name.in_(gone)))
            changed = True
        for name, item in items.items():
            state = (item.entry, item.source, item.position)
            if before.get(name) == state:
                continue
            values = {
                "entry": json.dumps(item.entry, allow_nan=False),
                "source": item.source,
                "position": item.position,
                "updated_at": now,
            }
            if table is ResourceRow:
                values["provider"] = str(item.entry.get("provider", ""))
                values["kind"] = str(item.entry.get("kind", ""))
            if name in before:
                session.execute(update(table).where(table.name == name).values(**values))
            else:
                session.execute(insert(table).values(name=name, created_at=now, **values))
            changed = True
        return changed

    @staticmethod
    def _working(session: Session) -> _Working:
        working = _Working()
        for table, items in ((ProviderRow, working.providers), (ResourceRow, working.resources)):
            for row in session.scalars(select(table).order_by(table.position, table.name)):
                items[row.name] = _Item(
                    json.loads(row.entry), row.source, row.position, row.created_at, row.updated_at
                )
        return working


_REVISION = select(RegistryState.revision).where(RegistryState.id == 1)
_REVISION_SQL = "SELECT revision FROM afhub_registry_state WHERE id = 1"


def _fetch_revision(conn) -> int:
    cursor = conn.cursor()
    try:
        cursor.execute(_REVISION_SQL)
        row = cursor.fetchone()
    finally:
        cursor.close()
    return int(row[0]) if row else 0


def _texts(session: Session, table) -> list[str]:
    return list(session.scalars(select(table.entry).order_by(table.position, table.name)))


def _entries(session: Session, table) -> list[dict[str, Any]]:
    return [json.loads(text) for text in _texts(session, table)]


def _in_use(session: Session) -> dict[str, int]:
    rows = session.execute(
        select(LedgerInterval.resource, func.count())
        .where(LedgerInterval.is_open(), LedgerInterval.kind == "server")
        .group_by(LedgerInterval.resource)
    )
    return {resource: int(n) for resource, n in rows if resource}
