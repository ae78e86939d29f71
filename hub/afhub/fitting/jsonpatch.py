"""JSON Patch (RFC 6902) for untrusted patches, copy-on-write and with bounded cost.

The one applier every part of afhub uses (request validation, the pyhf engine, the batched
engine). What it guarantees:

* **Copy-on-write.** The input document is never modified; each operation copies only the
  containers on its path, so the result shares every untouched part with the input, and a
  ``copy`` operation shares the copied value instead of duplicating it. Treat the input, the
  result and the patch's values as read-only.
* **Bounded cost.** The size of the document being built is counted *as each operation is
  applied* (in JSON values: every object, array, string, number, boolean and null is one),
  with :class:`PatchLimits`: at most ``max_operations`` operations per patch, a patched
  document of at most ``max_nodes`` values and ``max_depth`` levels of nesting, and at most
  ``max_copied_nodes`` values added by ``copy`` operations (the only operation that builds
  more than the patch carries). A chain of ``copy`` operations that doubles the document is
  refused at the operation that crosses a limit, before anything that large exists; because
  copies are shared, refusing it costs time and memory proportional to the patch, not to
  what it would expand to. Sizes are
  memoised per container, so counting a shared value costs nothing the second time.
* **Errors a person can act on.** Every failure raises :class:`PatchError`, whose message
  names the operation (its number, kind and path) and the problem; :class:`PatchTooLarge`
  (a subclass) when a limit is crossed, naming the limit.

Sizes are an upper bound: a removal does not give its nodes back, so a patch is charged for
everything it builds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

__all__ = [
    "UNBOUNDED",
    "PatchError",
    "PatchLimits",
    "PatchTooLarge",
    "Sizer",
    "apply_patch",
    "apply_patch_sized",
    "measure",
]


class PatchError(ValueError):
    """A patch that cannot be applied; the message is safe to show to its sender."""


class PatchTooLarge(PatchError):
    """A patch that would cross one of the :class:`PatchLimits`."""


@dataclass(frozen=True)
class PatchLimits:
    """Caps on one patch and on the document it builds (``None``: no cap)."""

    #: operations in one patch
    max_operations: int | None = 10_000
    #: JSON values (objects, arrays and scalars, each counted once) in the patched document
    max_nodes: int | None = 2_000_000
    #: nesting levels of the patched document (a scalar is 0, ``[1]`` is 1)
    max_depth: int | None = 64
    #: JSON values that ``copy`` operations add to the document (all of one patch): what a
    #: patch may build beyond its own size
    max_copied_nodes: int | None = 100_000


#: no caps (for documents already checked with the caps that matter)
UNBOUNDED = PatchLimits(max_operations=None, max_nodes=None, max_depth=None, max_copied_nodes=None)


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Sizer:
    """Size (values, depth) of JSON documents, memoised per container.

    Containers are identified by ``id``; the sizer keeps a reference to each one it measured
    so an id is never reused for another object while the sizer lives. Only valid while the
    measured containers are not modified (copy-on-write patching never modifies them).
    """

    def __init__(self) -> None:
        self._memo: dict[int, tuple[Any, int, int]] = {}

    def measure(self, value: Any) -> tuple[int, int]:
        """``(values, depth)`` of ``value``; iterative (never recurses)."""
        if not isinstance(value, dict | list):
            return 1, 0
        hit = self._memo.get(id(value))
        if hit is not None and hit[0] is value:
            return hit[1], hit[2]
        # post-order walk over containers not yet measured
        stack: list[tuple[Any, bool]] = [(value, False)]
        while stack:
            node, expanded = stack.pop()
            hit = self._memo.get(id(node))
            if hit is not None and hit[0] is node:
                continue
            children = node.values() if isinstance(node, dict) else node
            if not expanded:
                stack.append((node, True))
                for child in children:
                    if isinstance(child, dict | list):
                        known = self._memo.get(id(child))
                        if known is None or known[0] is not child:
                            stack.append((child, False))
                continue
            nodes, depth = 1, 1
            for child in children:
                if isinstance(child, dict | list):
                    _, n, d = self._memo[id(child)]
                    nodes += n
                    depth = max(depth, d + 1)
                else:
                    nodes += 1
            self._memo[id(node)] = (node, nodes, depth)
        _, nodes, depth = self._memo[id(value)]
        return nodes, depth


def measure(value: Any) -> tuple[int, int]:
    """``(values, depth)`` of a JSON document (each shared part counted where it appears)."""
    return Sizer().measure(value)


def _tokens(pointer: Any) -> list[str]:
    if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
        raise PatchError(f"{_short(pointer)!r} is not a JSON pointer")
    if not pointer:
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _index(container: list, step: str, *, insert: bool = False) -> int:
    if insert and step == "-":
        return len(container)
    if not step.isdigit() or not step.isascii() or (len(step) > 1 and step[0] == "0"):
        raise PatchError(f"{_short(step, 40)!r} is not an array index")
    if len(step) > 18:
        raise PatchError(f"array index {_short(step, 40)} is out of range")
    index = int(step)
    if index > len(container) or (index == len(container) and not insert):
        raise PatchError(f"array index {index} is out of range (length {len(container)})")
    return index


def _child(container: Any, token: str) -> Any:
    if isinstance(container, dict):
        if token not in container:
            raise PatchError(f"member {_short(token)!r} does not exist")
        return container[token]
    if isinstance(container, list):
        return container[_index(container, token)]
    raise PatchError(f"cannot descend into a {_kind(container)} at {_short(token)!r}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return type(value).__name__


def _get(doc: Any, tokens: list[str]) -> Any:
    for token in tokens:
        doc = _child(doc, token)
    return doc


def _copied_parent(root: Any, tokens: list[str]) -> tuple[Any, Any]:
    """Copy the containers along ``tokens[:-1]`` (copy-on-write); return (new root, parent)."""
    if not isinstance(root, dict | list):
        raise PatchError(f"cannot descend into a {_kind(root)} at {_short(tokens[0])!r}")
    root = copy.copy(root)
    parent = root
    for token in tokens[:-1]:
        child = _child(parent, token)
        if not isinstance(child, dict | list):
            raise PatchError(f"cannot descend into a {_kind(child)} below {_short(token)!r}")
        child = copy.copy(child)
        if isinstance(parent, dict):
            parent[token] = child
        else:
            parent[_index(parent, token)] = child
        parent = child
    return root, parent


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    doc, parent = _copied_parent(doc, tokens)
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    else:
        parent.insert(_index(parent, tokens[-1], insert=True), value)
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    doc, parent = _copied_parent(doc, tokens)
    _child(parent, tokens[-1])
    if isinstance(parent, dict):
        del parent[tokens[-1]]
    else:
        del parent[_index(parent, tokens[-1])]
    return doc


def _replace(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    doc, parent = _copied_parent(doc, tokens)
    _child(parent, tokens[-1])
    if isinstance(parent, dict):
        parent[tokens[-1]] = value
    else:
        parent[_index(parent, tokens[-1])] = value
    return doc


class _Budget:
    """The size of the document being built, checked against the limits."""

    def __init__(self, doc: Any, limits: PatchLimits, sizer: Sizer, base_nodes: int | None):
        self.limits = limits
        self.sizer = sizer
        if base_nodes is None and (limits.max_nodes is not None or limits.max_depth is not None):
            base_nodes, depth = sizer.measure(doc)
            self._check_depth(depth, "the document")
        self.nodes = base_nodes or 0
        self.copied = 0

    def _check_depth(self, depth: int, what: str) -> None:
        cap = self.limits.max_depth
        if cap is not None and depth > cap:
            raise PatchTooLarge(
                f"{what} would be nested {depth} levels deep, over the limit of {cap}"
            )

    def place(self, value: Any, tokens: list[str]) -> int:
        """Check the depth of ``value`` placed at ``tokens``; return its size."""
        limits = self.limits
        if (
            limits.max_nodes is None
            and limits.max_depth is None
            and limits.max_copied_nodes is None
        ):
            return 0
        nodes, depth = self.sizer.measure(value)
        self._check_depth(len(tokens) + depth, "the patched document")
        return nodes

    def grow(self, value: Any, tokens: list[str], *, copied: bool = False) -> None:
        """Charge for ``value`` placed at ``tokens`` (``copied``: by a copy operation)."""
        nodes = self.place(value, tokens)
        self.nodes += nodes
        if copied:
            self.copied += nodes
            cap = self.limits.max_copied_nodes
            if cap is not None and self.copied > cap:
                raise PatchTooLarge(
                    f"copy operations of this patch would add more than {cap} JSON values "
                    "(the limit on what a patch may duplicate): send the values themselves "
                    "or a smaller patch"
                )
        cap = self.limits.max_nodes
        if cap is not None and self.nodes > cap:
            raise PatchTooLarge(
                f"the patched document would hold more than {cap} JSON values (the limit on "
                "a patched workspace); copy operations duplicate data: send the values "
                "themselves or a smaller patch"
            )


def _apply_op(doc: Any, op: Any, budget: _Budget) -> Any:
    if not isinstance(op, dict):
        raise PatchError("an operation must be a JSON object")
    kind = op.get("op")
    tokens = _tokens(op.get("path"))
    if kind in ("add", "replace", "test") and "value" not in op:
        raise PatchError(f"a {kind} operation needs a value")
    if kind == "add":
        budget.grow(op["value"], tokens)
        return _add(doc, tokens, op["value"])
    if kind == "remove":
        return _remove(doc, tokens)
    if kind == "replace":
        budget.grow(op["value"], tokens)
        return _replace(doc, tokens, op["value"])
    if kind in ("move", "copy"):
        if "from" not in op:
            raise PatchError(f"a {kind} operation needs from")
        source = _tokens(op["from"])
        value = _get(doc, source)
        if kind == "move":
            if source == tokens:
                return doc
            if tokens[: len(source)] == source:
                raise PatchError("cannot move a value into one of its own children")
            budget.place(value, tokens)  # its depth may change, its size is not new
            return _add(_remove(doc, source), tokens, value)
        budget.grow(value, tokens, copied=True)
        return _add(doc, tokens, value)
    if kind == "test":
        if not _equal(_get(doc, tokens), op["value"]):
            raise PatchError(f"test failed: the value at {_short(op.get('path'))!r} differs")
        return doc
    raise PatchError(
        f"unknown operation {_short(kind, 20)!r}; known: add, remove, replace, move, copy, test"
    )


def _equal(a: Any, b: Any) -> bool:
    """JSON equality (``1 == 1.0``, but ``true`` is not ``1``); iterative."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if x is y:
            continue
        if isinstance(x, bool) or isinstance(y, bool):
            if not (isinstance(x, bool) and isinstance(y, bool) and x == y):
                return False
        elif isinstance(x, dict):
            if not isinstance(y, dict) or x.keys() != y.keys():
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list):
            if not isinstance(y, list) or len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif isinstance(y, dict | list) or x != y:
            return False
    return True


def apply_patch(
    doc: Any,
    operations: Any,
    limits: PatchLimits = PatchLimits(),
    *,
    sizer: Sizer | None = None,
    base_nodes: int | None = None,
) -> Any:
    """Apply the RFC 6902 ``operations`` to ``doc``; return the new document.

    ``doc`` is not modified (see the module docstring). Raises :class:`PatchError` (or
    :class:`PatchTooLarge`) with a message naming the operation. ``sizer`` (reused across
    patches of the same document) and ``base_nodes`` (its measured size) avoid measuring
    the same document again for every patch.
    """
    return apply_patch_sized(doc, operations, limits, sizer=sizer, base_nodes=base_nodes)[0]


def apply_patch_sized(
    doc: Any,
    operations: Any,
    limits: PatchLimits = PatchLimits(),
    *,
    sizer: Sizer | None = None,
    base_nodes: int | None = None,
) -> tuple[Any, int]:
    """:func:`apply_patch`, also returning an upper bound of the patched document's size in
    JSON values (0 when ``limits`` caps neither size nor depth)."""
    if not isinstance(operations, list):
        raise PatchError("a JSON Patch must be a list of operations")
    cap = limits.max_operations
    if cap is not None and len(operations) > cap:
        raise PatchTooLarge(
            f"the patch has {len(operations)} operations, over the limit of {cap} per patch"
        )
    budget = _Budget(doc, limits, sizer or Sizer(), base_nodes)
    for number, op in enumerate(operations):
        try:
            doc = _apply_op(doc, op, budget)
        except PatchError as exc:
            what = (
                f"{_short(op.get('op'), 10)} {_short(op.get('path'))}"
                if isinstance(op, dict)
                else "?"
            )
            raise type(exc)(f"operation {number} ({what}): {exc}") from None
    return doc, budget.nodes
