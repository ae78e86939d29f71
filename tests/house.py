"""The shape of the house: modules, sizes, import edges and circles of hub/ and extensions/.

``python tests/house.py`` prints the figures quoted in docs/architecture.md and in closing
notes (modules, lines, the largest files and functions, internal import edges, circles).
``tests/test_layers.py`` checks the layering rule and the size rule on the same graph.
Imports made inside functions count, and so do modules named as strings for run-time import
(``preload=("afhub.fitting.plan",)``, entry points): a string literal that names a module of
the package is an edge like an import statement.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASES = (ROOT / "hub", ROOT / "extensions")
PACKAGES = ("afhub", "afhub_server")

#: a module over this many lines, or a function over FUNCTION_LIMIT, needs a note at the top
#: of its file that says why the size is earned (a line that starts with ``Size:``)
MODULE_LIMIT = 600
FUNCTION_LIMIT = 60


@dataclass
class Module:
    name: str
    path: Path
    lines: int
    imports: set[str] = field(default_factory=set)
    size_note: bool = False
    long_functions: list[tuple[str, int]] = field(default_factory=list)


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _named_modules(tree: ast.AST) -> set[str]:
    """Module names written as strings (``"afhub.fitting.plan"``), as for a run-time import."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.split(":", 1)[0].strip()
            if (
                text.startswith(tuple(p + "." for p in PACKAGES))
                and text.replace(".", "").replace("_", "").isalnum()
            ):
                out.add(text)
    return out


def imports_of(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    package = module if is_package else module.rpartition(".")[0]
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
    return out | _named_modules(tree)


def _long_functions(tree: ast.AST) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > FUNCTION_LIMIT:
                found.append((node.name, length))
    return found


def _has_size_note(source: str) -> bool:
    head = source.split('"""', 2)[1] if source.lstrip().startswith('"""') else ""
    return any(line.strip().startswith("Size:") for line in head.splitlines())


def load_house() -> dict[str, Module]:
    house: dict[str, Module] = {}
    for base in BASES:
        for path in sorted(base.rglob("*.py")):
            if "migrations" in path.parts or "node_modules" in path.parts:
                continue
            name = module_name(path, base)
            source = path.read_text()
            tree = ast.parse(source, str(path))
            house[name] = Module(
                name=name,
                path=path,
                lines=len(source.splitlines()),
                imports=imports_of(tree, name, path.name == "__init__.py"),
                size_note=_has_size_note(source),
                long_functions=_long_functions(tree),
            )
    return house


def resolve(name: str, house: dict[str, Module]) -> str | None:
    """The module of the house that an imported name lives in (``a.b.C`` -> ``a.b``)."""
    while name:
        if name in house:
            return name
        name = name.rpartition(".")[0]
    return None


def edges(house: dict[str, Module]) -> set[tuple[str, str]]:
    out = set()
    for module in house.values():
        for name in module.imports:
            target = resolve(name, house)
            if target and target != module.name and not module.name.startswith(target + "."):
                # a module importing its own package's __init__ is not an edge between rooms
                out.add((module.name, target))
    return out


def circles(house: dict[str, Module]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph: dict[str, list[str]] = {name: [] for name in house}
    for source, target in edges(house):
        graph[source].append(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def report(house: dict[str, Module]) -> str:
    lines = [
        f"modules: {len(house)}",
        f"lines: {sum(m.lines for m in house.values())}",
        f"internal import edges: {len(edges(house))}",
        f"import circles: {len(circles(house))}",
    ]
    lines += [f"  circle: {' <-> '.join(c)}" for c in circles(house)]
    over = [m for m in house.values() if m.lines > MODULE_LIMIT]
    lines.append(f"modules over {MODULE_LIMIT} lines: {len(over)}")
    lines += [f"  {m.lines:5d} {m.name}{' (size note)' if m.size_note else ''}" for m in over]
    long = [(m.name, f, n) for m in house.values() for f, n in m.long_functions]
    lines.append(f"functions over {FUNCTION_LIMIT} lines: {len(long)}")
    lines += [f"  {n:5d} {mod}.{f}" for mod, f, n in sorted(long, key=lambda t: -t[2])]
    lines.append("largest modules:")
    for m in sorted(house.values(), key=lambda m: -m.lines)[:10]:
        lines.append(f"  {m.lines:5d} {m.name}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(load_house()))
