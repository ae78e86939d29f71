"""The layering rule of docs/architecture.md, checked on every import in the source.

Inner layers never import outer ones: pure core → stores → services → faces. The pure core
imports nothing of JupyterHub, tornado or the database; the server extension reaches the
hub-side services only over HTTP. Imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HUB = ROOT / "hub"
EXTENSIONS = ROOT / "extensions"

CORE = (
    "afhub.groups",
    "afhub.quotas",
    "afhub.dask",
    "afhub.culling",
    "afhub.registry",
    "afhub.profiles",
    "afhub.devices",
    "afhub.passwords",
    "afhub.fitting",
)
STORES = ("afhub.stores", "afhub.accounts")
SERVICES = ("afhub.auth", "afhub.spawners", "afhub.services")
FACES = ("afhub.cli", "afhub.cli_groups", "afhub.cli_resources", "afhub.cli_fit", "afhub_server")
#: the fitting client is a face (HTTP only) that lives beside the engines it talks to
CORE_EXCEPTIONS = ("afhub.fitting.client",)
HUB_OR_DATABASE = ("jupyterhub", "tornado", "sqlalchemy", "alembic")


def _module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{alias.name}" for alias in node.names)
    return out


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _sources() -> list[tuple[str, Path]]:
    found = []
    for base in (HUB, EXTENSIONS):
        for path in sorted(base.rglob("*.py")):
            if "migrations" in path.parts:
                continue
            found.append((_module_name(path, base), path))
    return found


SOURCES = _sources()


def _violations(layer: tuple[str, ...], forbidden: tuple[str, ...], skip=()) -> list[str]:
    bad = []
    for module, path in SOURCES:
        if not _within(module, layer) or _within(module, skip):
            continue
        for name in sorted(_imports(path, module)):
            if _within(name, forbidden):
                bad.append(f"{module} imports {name}")
    return bad


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from afhub.stores.facade import Stores\n    import tornado\n")
    assert {"afhub.stores.facade", "tornado"} <= _imports(source, "afhub.quotas.mod")


def test_sources_were_found():
    names = {module for module, _ in SOURCES}
    assert {"afhub.quotas.decisions", "afhub.stores.ledger", "afhub.cli"} <= names


@pytest.mark.parametrize(
    ("layer", "forbidden", "skip"),
    [
        (CORE, STORES + SERVICES + FACES + HUB_OR_DATABASE, CORE_EXCEPTIONS),
        (STORES, SERVICES + FACES + ("jupyterhub", "tornado"), ()),
        (SERVICES, FACES, ()),
        (("afhub_server",), STORES + SERVICES + ("sqlalchemy",), ()),
    ],
    ids=["pure-core", "stores", "services", "server-extension"],
)
def test_inner_layers_never_import_outer_ones(layer, forbidden, skip):
    assert _violations(layer, forbidden, skip) == []
