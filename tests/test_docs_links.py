"""Every relative link in README.md and docs/ (inline ``[x](path)`` and reference
``[x]: path``) points at a file that exists and, when it names an anchor, at a heading that
file has (GitHub's anchor rules); README's layout names only folders that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out: set[str] = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        if line.startswith("#"):
            text = line.lstrip("#").strip().lower()
            text = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
            out.add(text)
    return out


def links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())
    return LINK.findall(text) + REFERENCE.findall(text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in links(page):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


def test_checker_finds_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "a.md"
    page.write_text("# Title\n\n[x](missing.md) [y](#title) [z](#nope)\n\n[r]: gone.md\n")
    assert links(page) == ["missing.md", "#title", "#nope", "gone.md"]
    assert anchors(page) == {"title"}


def test_readme_layout_names_only_what_exists() -> None:
    text = (ROOT / "README.md").read_text()
    layout = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = [
        path
        for row in layout.splitlines()
        if row.startswith("| `")
        for path in re.findall(r"`([^`]+)`", row.split("|")[1])
    ]
    assert "hub/afhub/" in named
    assert [p for p in named if not (ROOT / p).exists()] == []
    images = re.search(r"\| `images/` \| container images: ([^|]+)\|", layout)
    assert images, "the layout's images/ row lists the images"
    missing = [i for i in images.group(1).strip().split(", ") if not (ROOT / "images" / i).is_dir()]
    assert missing == []
