"""The onboarding tutorials, placed in a user's home the first time a server starts there.

The notebooks live in ``voila-apps/onboarding/`` of the repository (a checkout or
``pip install -e .``), or in ``/opt/afhub/tutorials`` in the notebook images; the
environment variable ``AFHUB_TUTORIALS`` names another folder (empty: place nothing).

:func:`place` copies every ``*.ipynb`` of that folder into ``<home>/tutorials/`` and keeps a
marker, ``<home>/.afhub/tutorials.json``, with the SHA-256 of each copy it made. On a later
start it

* leaves a tutorial the user edited alone (its content no longer matches the marker);
* never brings back a tutorial the user deleted (it is in the marker, so it was placed once);
* refreshes a copy the user never changed when a newer afhub ships a new version of it;
* places a tutorial that is new in this release.

A file of the same name that afhub did not place is never touched. The local spawner calls
:func:`place` before a server starts (hub side); on Kubernetes the notebook images run the
same code at container start, from the image's copy (``python -m afhub.spawners.tutorials``,
see docs/tutorials.md). Standard library only, so that it runs in the images as it is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path

#: where the notebook images keep the tutorials (images/notebook-*/Dockerfile)
IMAGE_FOLDER = Path("/opt/afhub/tutorials")
#: the repository's copy (a checkout, or ``pip install -e .``)
REPOSITORY_FOLDER = Path(__file__).resolve().parents[3] / "voila-apps" / "onboarding"
#: the folder in a user's home that receives the tutorials
HOME_FOLDER = "tutorials"
#: what afhub placed, relative to the home
MARKER = Path(".afhub") / "tutorials.json"

log = logging.getLogger(__name__)


def source_folder() -> Path | None:
    """``$AFHUB_TUTORIALS`` when set (empty: none), else the image's folder, else the
    repository's; None when there is none."""
    explicit = os.environ.get("AFHUB_TUTORIALS")
    if explicit is not None:
        return Path(explicit) if explicit else None
    for folder in (IMAGE_FOLDER, REPOSITORY_FOLDER):
        if folder.is_dir():
            return folder
    return None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_marker(path: Path) -> dict[str, str]:
    try:
        placed = json.loads(path.read_text(encoding="utf-8")).get("placed", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in placed.items()} if isinstance(placed, dict) else {}


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (0600), through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(partial, path)


def _decide(target: Path, new: bytes, recorded: str | None) -> bool:
    """Whether to write ``new`` to ``target`` (module docstring)."""
    if recorded is None:  # never placed: place it unless a file of that name is there
        return not target.exists()
    if not target.is_file():  # placed once, then deleted by the user
        return False
    current = _digest(target.read_bytes())
    return current == recorded and current != _digest(new)  # unchanged by the user, outdated


def place(home: str | os.PathLike[str], source: Path | None = None) -> list[str]:
    """Copy the tutorials of ``source`` (default :func:`source_folder`) into
    ``home/tutorials``; returns the names written. Creates ``home`` (0700) if needed."""
    source = source_folder() if source is None else source
    if source is None or not source.is_dir():
        return []
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)  # the local spawner's private home
    marker = home / MARKER
    placed = _read_marker(marker)
    written = []
    for notebook in sorted(source.glob("*.ipynb")):
        new = notebook.read_bytes()
        target = home / HOME_FOLDER / notebook.name
        if _decide(target, new, placed.get(notebook.name)):
            _write_private(target, new)
            placed[notebook.name] = _digest(new)
            written.append(notebook.name)
        elif notebook.name not in placed and target.is_file():
            placed[notebook.name] = ""  # the user's own file: never ours to replace
    if written or not marker.exists():
        _write_private(marker, json.dumps({"placed": placed}, indent=1).encode())
    return written


def place_quietly(home: str | os.PathLike[str]) -> None:
    """:func:`place`, logging instead of raising: a server starts without its tutorials
    rather than not at all (a full disk, a home another user owns)."""
    try:
        written = place(home)
    except OSError as exc:
        log.warning("tutorials not placed in %s: %s", home, exc)
        return
    if written:
        log.info("tutorials placed in %s: %s", home, ", ".join(written))


def main(argv: list[str]) -> int:
    """``python -m afhub.spawners.tutorials [SOURCE] [HOME]`` (the images' start hook)."""
    source = Path(argv[0]) if argv else source_folder()
    home = argv[1] if len(argv) > 1 else os.path.expanduser("~")
    written = place(home, source)
    print(f"afhub tutorials: placed {len(written)} in {Path(home) / HOME_FOLDER}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
