"""Group paths: what a valid group name looks like, with messages a person can act on.

A group is named by its path in the tree, segments joined by ``/``: ``atlas``,
``atlas/higgs``, ``atlas/higgs/students``. Each segment starts with a lowercase letter or
digit and continues with lowercase letters, digits, ``.``, ``_`` or ``-``.
"""

from __future__ import annotations

import re
import unicodedata

#: longest allowed segment (one level of the tree)
MAX_SEGMENT_LENGTH = 63
#: deepest allowed tree: ``a/b/c/d/e/f/g/h`` has depth 8
MAX_DEPTH = 8
#: longest allowed full path, separators included
MAX_PATH_LENGTH = 255

SEPARATOR = "/"
_SEGMENT_RE = re.compile(r"[a-z0-9][a-z0-9._-]*")
_HTML_CHARS = set("<>&\"'`")


class InvalidGroupName(ValueError):
    """A group name or path that breaks the naming rules; ``str()`` says which rule."""


def _describe(value: str) -> str:
    shown = value if len(value) <= 40 else value[:37] + "..."
    return repr(shown)


def validate_segment(segment: object) -> str:
    """Return ``segment`` if it is a valid single-level group name, else raise."""
    if not isinstance(segment, str):
        raise InvalidGroupName(f"a group name must be a string, not {type(segment).__name__}")
    if segment == "":
        raise InvalidGroupName("a group name must not be empty")
    if SEPARATOR in segment:
        raise InvalidGroupName(
            f"group name {_describe(segment)} must not contain '/': "
            "create the parent group first and name the subgroup by its last part"
        )
    _check_characters(segment)
    if ".." in segment:
        raise InvalidGroupName(f"group name {_describe(segment)} must not contain '..'")
    if len(segment) > MAX_SEGMENT_LENGTH:
        raise InvalidGroupName(
            f"group name {_describe(segment)} is {len(segment)} characters long; "
            f"the limit is {MAX_SEGMENT_LENGTH}"
        )
    if not _SEGMENT_RE.fullmatch(segment):
        raise InvalidGroupName(
            f"group name {_describe(segment)} is not allowed: use lowercase letters, digits, "
            "'.', '_' and '-', starting with a letter or digit"
        )
    return segment


def _check_characters(value: str) -> None:
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            raise InvalidGroupName(
                f"group name {_describe(value)} contains a control character "
                f"(U+{ord(ch):04X}); use printable characters only"
            )
        if ch in _HTML_CHARS:
            raise InvalidGroupName(
                f"group name {_describe(value)} contains {ch!r}; HTML and quote characters "
                "are not allowed"
            )
        if ch.isspace():
            raise InvalidGroupName(f"group name {_describe(value)} must not contain whitespace")


def validate_path(path: object) -> str:
    """Return ``path`` if it is a valid group path (one or more segments), else raise."""
    if not isinstance(path, str):
        raise InvalidGroupName(f"a group path must be a string, not {type(path).__name__}")
    if path == "":
        raise InvalidGroupName("a group path must not be empty")
    _check_characters(path)
    if path.startswith(SEPARATOR) or path.endswith(SEPARATOR):
        raise InvalidGroupName(
            f"group path {_describe(path)} must not start or end with '/' "
            "(write 'atlas/higgs', not '/atlas/higgs/')"
        )
    if len(path) > MAX_PATH_LENGTH:
        raise InvalidGroupName(
            f"group path is {len(path)} characters long; the limit is {MAX_PATH_LENGTH}"
        )
    segments = path.split(SEPARATOR)
    if "" in segments:
        raise InvalidGroupName(f"group path {_describe(path)} has an empty part ('//')")
    if len(segments) > MAX_DEPTH:
        raise InvalidGroupName(
            f"group path {_describe(path)} is {len(segments)} levels deep; the limit is {MAX_DEPTH}"
        )
    for segment in segments:
        validate_segment(segment)
    return path


def split_path(path: str) -> list[str]:
    """The segments of a valid path, root first."""
    return validate_path(path).split(SEPARATOR)


def join_path(parent: str | None, segment: str) -> str:
    """The path of ``segment`` under ``parent`` (``None`` for a top-level group), validated."""
    validate_segment(segment)
    path = segment if parent is None else f"{validate_path(parent)}{SEPARATOR}{segment}"
    return validate_path(path)


def parent_path(path: str) -> str | None:
    """The parent's path, or ``None`` for a top-level group."""
    validate_path(path)
    head, sep, _ = path.rpartition(SEPARATOR)
    return head if sep else None


def leaf_name(path: str) -> str:
    """The last segment of a path."""
    return validate_path(path).rpartition(SEPARATOR)[2]


def depth(path: str) -> int:
    """Number of segments: 1 for a top-level group."""
    return len(split_path(path))
