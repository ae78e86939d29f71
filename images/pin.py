"""Compile each image's loose ``requirements.in`` into a pinned ``requirements.txt``.

The pins are the versions installed in the environment this runs in, which is the one
``make test`` tests (``make install``, locked by ``constraints.txt``): the images carry exactly
what the tests used.
Dependencies are followed through the installed packages' metadata (environment markers
evaluated for Linux, CPython 3.11), so the file is complete. ``--check`` says whether every
``requirements.txt`` and ``constraints.txt`` is up to date (exit 1 if not), which the image
tests do.

    .venv/bin/python images/pin.py          # rewrite images/*/requirements.txt
    .venv/bin/python images/pin.py --check
    .venv/bin/python images/pin.py --lock   # rewrite constraints.txt (``make lock``)

``--lock`` writes the test environment's own lock, ``constraints.txt``, the same way: what
``afhub[dev]`` and pip need as installed here, so a tool installed into ``.venv`` by hand
(a profiler, say) stays out of it.
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

IMAGES = Path(__file__).resolve().parent
LOCK = IMAGES.parent / "constraints.txt"
LOCK_HEAD = [
    "# The Python environment make install builds (make up, make test): every distribution",
    "# pinned, so a clean checkout tests what was tested here and images/pin.py compiles the",
    "# images' pins from it. Written by `make lock`; commit it with images/*/requirements.txt.",
]
#: the images' platform (docker-stacks: Ubuntu, CPython 3.11)
TARGET = {**default_environment(), "sys_platform": "linux", "platform_system": "Linux"}


def _requirements(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def _applies(requirement: Requirement, extras: set[str]) -> bool:
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**TARGET, "extra": e}) for e in extras or {""})


def closure(roots: list[Requirement]) -> dict[str, str]:
    """Every distribution the roots need, with its installed version."""
    pins: dict[str, str] = {}
    todo = [(r, set(r.extras)) for r in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        if (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        dist = metadata.distribution(requirement.name)
        if not requirement.specifier.contains(dist.version, prereleases=True):
            raise SystemExit(f"{requirement} is not satisfied here ({dist.version} installed)")
        pins[name] = dist.version
        for line in dist.requires or []:
            child = Requirement(line)
            if _applies(child, extras):
                todo.append((child, set(child.extras)))
    return pins


def compiled(source: Path) -> str:
    pins = closure(_requirements(source))
    head = [
        f"# Compiled by images/pin.py from {source.name}: the versions the tests run with.",
        "# Do not edit; edit requirements.in and run `.venv/bin/python images/pin.py`.",
    ]
    return "\n".join([*head, *(f"{n}=={v}" for n, v in sorted(pins.items()))]) + "\n"


def lock() -> str:
    """``constraints.txt``: every distribution ``afhub[dev]`` and pip need, as installed."""
    pins = closure([Requirement("afhub[dev]"), Requirement("pip")])
    pins.pop("afhub")
    return "\n".join([*LOCK_HEAD, *(f"{n}=={v}" for n, v in sorted(pins.items()))]) + "\n"


def sources() -> list[Path]:
    return sorted(IMAGES.glob("*/requirements.in"))


def main(argv: list[str]) -> int:
    if "--lock" in argv:
        LOCK.write_text(lock())
        return 0
    stale = []
    for source in sources():
        target = source.with_suffix(".txt")
        text = compiled(source)
        if target.exists() and target.read_text() == text:
            continue
        stale.append(target)
        if "--check" not in argv:
            target.write_text(text)
    if "--check" in argv:
        if not LOCK.exists() or LOCK.read_text() != lock():
            stale.append(LOCK)
        for target in stale:
            print(f"{target} is out of date: run images/pin.py", file=sys.stderr)
        return 1 if stale else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
