"""Headless Chromium (Debian's package) driven by Playwright, for page tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHROMIUM = os.environ.get("AFHUB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: where screenshots are kept after the run (ignored by git)
ARTIFACTS = Path(
    os.environ.get("AFHUB_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts")
)


def chromium_path() -> str | None:
    """Debian's Chromium, which `.ci/run` installs; None where it is missing."""
    return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
