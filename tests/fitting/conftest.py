"""Shared fixtures for the fitting tests: the published ATLAS sbottom likelihoods.

The archive lives in the ``shared/`` folder beside the project (``../shared`` relative to the
project root), or wherever ``AFHUB_SHARED`` points. It is extracted once per test session into
a temporary folder; nothing is ever downloaded.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SBOTTOM_ARCHIVE = "data/likelihoods/sbottom_ATLAS-SUSY-2018-31.tar.gz"

#: RegionA reference point of PROVENANCE.md (pyhf 0.7.6, numpy, defaults, mu=1)
SBOTTOM_REFERENCE_PATCH = "patch.sbottom_1300_205_60.json"
SBOTTOM_REFERENCE_CLS_OBS = 0.24443628
SBOTTOM_REFERENCE_CLS_EXP = (0.090224, 0.193783, 0.384322, 0.655775, 0.891042)


def shared_dir() -> Path:
    """The shared data folder: ``$AFHUB_SHARED`` or ``../shared`` beside the project root."""
    env = os.environ.get("AFHUB_SHARED")
    return Path(env) if env else PROJECT_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def sbottom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding ``RegionA``, ``RegionB``, ``RegionC`` of the extracted sbottom archive."""
    archive = shared_dir() / SBOTTOM_ARCHIVE
    if not archive.is_file():
        pytest.skip(f"sbottom archive not found at {archive} (set AFHUB_SHARED)")
    target = tmp_path_factory.mktemp("sbottom")
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(target, filter="data")
    return target


@pytest.fixture(scope="session")
def sbottom_regionA_bkg(sbottom_dir: Path) -> dict:
    """RegionA background-only workspace spec (do not mutate: session-scoped)."""
    return json.loads((sbottom_dir / "RegionA" / "BkgOnly.json").read_text())


@pytest.fixture(scope="session")
def sbottom_regionA_reference_patch(sbottom_dir: Path) -> list:
    """The JSON Patch of the PROVENANCE.md reference point (do not mutate)."""
    return json.loads((sbottom_dir / "RegionA" / SBOTTOM_REFERENCE_PATCH).read_text())


@pytest.fixture(scope="session")
def sbottom_reference() -> dict:
    """The PROVENANCE.md reference numbers: patch file name, CLs_obs, CLs_exp band."""
    return {
        "patch": SBOTTOM_REFERENCE_PATCH,
        "cls_obs": SBOTTOM_REFERENCE_CLS_OBS,
        "cls_exp": SBOTTOM_REFERENCE_CLS_EXP,
    }
