"""``afhub resources``: the resource registry from the hub host.

Like ``afhub groups``, these commands open the facility database directly (``--db-url``,
``$AFHUB_DB_URL``, default ``sqlite:///$AFHUB_HOME/afhub.sqlite``) as a trusted operator.
Entries added here have source ``api`` (the same as through the facility API); the
registry file (``AFHUB_REGISTRY``) owns the ``file`` entries and is applied at hub start.

- ``afhub resources list`` / ``show NAME`` / ``export``
- ``afhub resources add FILE`` (or ``--json '{...}'``; ``--replace`` to change one)
- ``afhub resources remove NAME`` (refused while servers run on it)
- ``afhub resources apply FILE``: make the API-managed entries exactly the file's
- ``afhub resources providers list|add|remove``

Bad input is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from afhub.cli.database import database_command, fail, with_stores

#: the largest file ``add`` and ``apply`` read
MAX_FILE_BYTES = 4 * 1024 * 1024


class InputError(ValueError):
    """A file or --json value that cannot be read; the message says why."""


def read_document(path: str) -> Any:
    """YAML (or JSON) from ``path`` (``-``: standard input)."""
    try:
        if path == "-":
            text = sys.stdin.read(MAX_FILE_BYTES + 1)
        else:
            file = Path(path)
            if file.is_dir():
                raise InputError(f"{path} is a folder, not a YAML file")
            with file.open(encoding="utf-8") as fh:
                text = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text") from None
    if len(text) > MAX_FILE_BYTES:
        raise InputError(f"{path} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    return _parse_yaml(text, path)


def _parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise InputError(f"{where} is not valid YAML{at}: {problem}") from None


def _entry_from(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    if args.json is not None:
        try:
            entry = json.loads(args.json, parse_constant=_no_constant)
        except ValueError:
            raise InputError("--json is not valid JSON (NaN and Infinity are not JSON)") from None
    elif args.file is not None:
        entry = read_document(args.file)
    else:
        raise InputError(f"give a {kind} entry: a YAML FILE (or -) or --json '{{...}}'")
    if isinstance(entry, dict) and ("resources" in entry or "providers" in entry):
        raise InputError(
            "this is a whole registry document; use 'afhub resources apply FILE' for it"
        )
    if not isinstance(entry, dict):
        raise InputError(f"a {kind} entry must be a mapping (see docs/resources.md)")
    return entry


def _no_constant(name: str) -> None:
    raise ValueError(name)


def _dump(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False, allow_unicode=True)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _list(registry: Any, args: argparse.Namespace) -> None:
    records = registry.resource_records()
    running = registry.in_use()
    rows = [["NAME", "KIND", "ACCELERATOR", "COUNT", "SITE", "PROVIDER", "SOURCE"]]
    rows[0] += ["RUNNING", "GROUPS"]
    for record in records:
        e = record["entry"]
        if args.kind and e.get("kind") != args.kind:
            continue
        count = f"{e.get('count_per_node', 0)}x{e.get('node_count', 1)}"
        rows.append(
            [
                str(e.get("name")),
                str(e.get("kind")),
                str(e.get("accelerator") or "-"),
                count if e.get("kind") != "cpu" else f"{e.get('node_count', 1)} nodes",
                str(e.get("site")),
                str(e.get("provider")),
                record["source"],
                str(running.get(e.get("name"), 0)),
                ",".join(e.get("allowed_groups") or []) or "(nobody)",
            ]
        )
    if len(rows) == 1:
        print("no resources (add one with 'afhub resources add FILE')")
    else:
        print(_table(rows))


def _show(registry: Any, args: argparse.Namespace) -> None:
    shown = registry.get_resource(args.name)
    if shown is None:
        raise ValueError(f"no resource named {args.name!r}")
    record = next(r for r in registry.resource_records() if r["entry"] == shown)
    print(_dump(shown), end="")
    print(f"# source: {record['source']}")
    print(f"# servers running: {registry.in_use().get(args.name, 0)}")


def _add(registry: Any, args: argparse.Namespace, entry: Any) -> None:
    registry.add_resource(entry, replace=args.replace)
    print(f"{'stored' if args.replace else 'added'} resource {entry['name']}")


def _remove(registry: Any, args: argparse.Namespace) -> None:
    registry.remove_resource(args.name)
    print(f"removed resource {args.name}")


def _apply(registry: Any, document: Any) -> None:
    summary = registry.apply(document, source="api")
    for key in ("added", "changed", "removed"):
        for name in summary[key]:
            print(f"{key} {name}")
    print(f"{len(summary['unchanged'])} unchanged; revision {registry.revision()}")


def _providers(registry: Any, args: argparse.Namespace, entry: Any) -> None:
    sub = args.providers_command
    if sub == "list":
        rows = [["NAME", "INSTITUTION", "CONTACTS", "SOURCE"]]
        for record in registry.provider_records():
            e = record["entry"]
            contacts = ", ".join(e.get("contacts") or []) or "-"
            rows.append([e["name"], e["institution"], contacts, record["source"]])
        print(_table(rows) if len(rows) > 1 else "no providers")
    elif sub == "add":
        registry.add_provider(entry, replace=args.replace)
        print(f"{'stored' if args.replace else 'added'} provider {entry['name']}")
    elif sub == "remove":
        registry.remove_provider(args.name)
        print(f"removed provider {args.name}")


def _read_input(args: argparse.Namespace) -> Any:
    """The entry or document a command reads, read before the database is opened (a bad
    file never touches it); ``None`` for commands that read nothing."""
    command = args.resources_command
    if command == "add":
        return _entry_from(args, "resource")
    if command == "apply":
        return read_document(args.file)
    if command == "providers" and args.providers_command == "add":
        return _entry_from(args, "provider")
    return None


def cmd_resources(args: argparse.Namespace, settings: Any = None) -> int:
    try:
        given = _read_input(args)
    except InputError as exc:
        return fail(str(exc))

    def action(stores: Any) -> None:
        registry = stores.registry
        command = args.resources_command
        if command == "list":
            _list(registry, args)
        elif command == "show":
            _show(registry, args)
        elif command == "add":
            _add(registry, args, given)
        elif command == "remove":
            _remove(registry, args)
        elif command == "apply":
            _apply(registry, given)
        elif command == "export":
            print(_dump(registry.document(args.source)), end="")
        elif command == "providers":
            _providers(registry, args, given)

    return with_stores(args, settings, action)


def _entry_arguments(parser: argparse.ArgumentParser, kind: str) -> None:
    """Where ``add`` reads its entry from, and whether it may replace one."""
    parser.add_argument(
        "file", nargs="?", metavar="FILE", help="YAML file with one entry ('-': stdin)"
    )
    parser.add_argument("--json", metavar="JSON", help="the entry as JSON instead of a file")
    parser.add_argument("--replace", action="store_true", help=f"change the {kind} of that name")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``resources`` subcommand."""
    resources, sub = database_command(
        subparsers, "resources", "the resource registry: CPU, GPU and FPGA node pools"
    )
    p = sub.add_parser("list", help="list resources (who may use them, servers running)")
    p.add_argument("--kind", choices=["cpu", "gpu", "fpga"], help="only this kind")
    p = sub.add_parser("show", help="one resource's entry (YAML)")
    p.add_argument("name", metavar="NAME", help="the resource's name")
    p = sub.add_parser("add", help="add a resource from a YAML entry (docs/resources.md)")
    _entry_arguments(p, "resource")
    p = sub.add_parser("remove", help="remove a resource (refused while servers run on it)")
    p.add_argument("name", metavar="NAME", help="the resource's name")
    p = sub.add_parser(
        "apply", help="make the API-managed entries exactly FILE's (the file's entries stay)"
    )
    p.add_argument("file", metavar="FILE", help="registry YAML: providers and resources")
    p = sub.add_parser("export", help="print the registry document (YAML)")
    p.add_argument("--source", choices=["api", "file"], help="only these entries")
    providers = sub.add_parser("providers", help="institutions lending resources")
    psub = providers.add_subparsers(dest="providers_command", required=True, metavar="COMMAND")
    psub.add_parser("list", help="list providers")
    p = psub.add_parser("add", help="add a provider: name, institution, contacts")
    _entry_arguments(p, "provider")
    p = psub.add_parser("remove", help="remove a provider (refused while it has resources)")
    p.add_argument("name", metavar="NAME", help="the provider's name")
    resources.set_defaults(handler=cmd_resources)
