"""The layering rule of docs/architecture.md, checked on every module of hub/ and extensions/.

Inner layers never import outer ones: pure core -> stores -> services -> faces. The pure core
imports nothing of JupyterHub, tornado or the database; the stores import no JupyterHub; the
hub services build on the service kit and never on each other; the server extension reaches
the hub-side services only over HTTP. Imports inside functions count, and so do modules named
in strings for a run-time import (worker preloads, entry points). There are no exemptions.
"""

from __future__ import annotations

import ast
import tomllib

import pytest

from tests.house import (
    FUNCTION_LIMIT,
    MODULE_LIMIT,
    ROOT,
    circles,
    imports_of,
    load_house,
    resolve,
)

CORE = (
    "afhub",  # the package's own __init__ (a version string)
    "afhub.settings",
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
STORES = ("afhub.stores",)
SERVICES = ("afhub.auth", "afhub.spawners", "afhub.services")
FACES = (
    "afhub.cli",
    "afhub.client",
    "afhub.web",
    "afhub.hubconfig",
    "afhub.jupyterhub_config",
    "afhub.__main__",
    "afhub_server",
)
LAYERS = {"core": CORE, "stores": STORES, "services": SERVICES, "faces": FACES}
HUB_OR_DATABASE = ("jupyterhub", "tornado", "sqlalchemy", "alembic", "nativeauthenticator")
#: hub services that run as their own process; each builds on what the services share
#: (the kit, the hub client, the parent watch) and never on another service
SERVICE_APPS = (
    "afhub.services.facility_api",
    "afhub.services.fitting",
    "afhub.services.gateway",
    "afhub.services.accountant",
    "afhub.services.culler",
)

HOUSE = load_house()


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    if "afhub" in prefixes and name == "afhub":
        return True
    return any(name == p or name.startswith(p + ".") for p in prefixes if p != "afhub")


def layer_of(module: str) -> str | None:
    found = [layer for layer, prefixes in LAYERS.items() if _within(module, prefixes)]
    return found[0] if len(found) == 1 else None


def _violations(layer: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for module in HOUSE.values():
        if not _within(module.name, layer):
            continue
        bad += [
            f"{module.name} imports {n}" for n in sorted(module.imports) if _within(n, forbidden)
        ]
    return bad


def test_the_checker_sees_imports_inside_functions_and_names_in_strings():
    tree = ast.parse(
        "def f():\n    from afhub.stores.facade import Stores\n    import tornado\n"
        "PRELOAD = ('afhub.services.fitting.work',)\n"
    )
    found = imports_of(tree, "afhub.quotas.mod", is_package=False)
    assert {"afhub.stores.facade", "tornado", "afhub.services.fitting.work"} <= found


def test_sources_were_found():
    assert {"afhub.quotas.decisions", "afhub.fitting.batched.model"} <= set(HOUSE)
    assert len(HOUSE) > 80


def test_every_module_belongs_to_exactly_one_layer():
    assert [name for name in HOUSE if layer_of(name) is None] == []


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        (CORE, STORES + SERVICES + FACES + HUB_OR_DATABASE),
        (STORES, SERVICES + FACES + ("jupyterhub", "tornado", "nativeauthenticator")),
        (SERVICES, FACES),
        (("afhub_server", "afhub.client"), STORES + SERVICES + ("sqlalchemy",)),
    ],
    ids=["pure-core", "stores", "services", "http-only-faces"],
)
def test_inner_layers_never_import_outer_ones(layer, forbidden):
    assert _violations(layer, forbidden) == []


@pytest.mark.parametrize("app", SERVICE_APPS)
def test_a_service_never_builds_on_another(app):
    others = tuple(other for other in SERVICE_APPS if other != app)
    assert _violations((app,), others) == []


def test_entry_points_name_modules_of_the_right_layer():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    named = {"scripts": list(project.get("scripts", {}).values())}
    for group, entries in project.get("entry-points", {}).items():
        named[group] = list(entries.values())
    for group, targets in named.items():
        for target in targets:
            module = resolve(target.split(":")[0], HOUSE)
            assert module, f"{group}: {target} names no module of the house"
            if group == "scripts":
                assert layer_of(module) == "faces", target
            elif group.startswith("jupyterhub."):
                assert layer_of(module) == "services", target


def test_no_import_circles():
    assert circles(HOUSE) == []


def test_no_module_or_function_too_large_without_a_note_that_says_why():
    too_large = [
        f"{m.name}: {m.lines} lines"
        for m in HOUSE.values()
        if m.lines > MODULE_LIMIT and not m.size_note
    ]
    too_long = [
        f"{m.name}.{name}: {length} lines"
        for m in HOUSE.values()
        if not m.size_note
        for name, length in m.long_functions
    ]
    assert too_large == [], f"over {MODULE_LIMIT} lines"
    assert too_long == [], f"over {FUNCTION_LIMIT} lines"
