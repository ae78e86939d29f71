"""The chart lints, renders and validates over the values matrix, offline.

Every rendered manifest is checked against the Kubernetes schemas of the oldest version
the chart supports (z2jh 4.x needs 1.28) and the newest ``kubernetes-validate`` knows; the
``jupyterhub:`` and ``dask-gateway:`` sections of every values file against the upstream
charts' schemas; afhub's section against ``values.schema.yaml``, which also generates
``docs/chart.md``.
"""

from __future__ import annotations

import copy
import json
import sys

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.chart.conftest import (
    CHART,
    ROOT,
    SCHEMAS,
    VALUES_FILES,
    chart_values,
    find,
    values_of,
)

KUBE_VERSIONS = ("1.28.0", "1.37.0")
#: kinds of CRDs (Prometheus Operator) the Kubernetes schemas do not hold
CRD_KINDS = {"ServiceMonitor"}

sys.path.insert(0, str(CHART / "ci"))
import schema as chart_schema  # noqa: E402 - the generator lives with the chart


def without_required(node):
    """The upstream schemas validate values merged with their chart's defaults, which are
    not here: their ``required`` lists are dropped, every type, enum and closed object kept."""
    if isinstance(node, dict):
        return {k: without_required(v) for k, v in node.items() if k != "required"}
    if isinstance(node, list):
        return [without_required(v) for v in node]
    return node


def errors(schema: dict, instance) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(instance)]


@pytest.mark.parametrize("values", VALUES_FILES)
def test_lint_strict(helm, values):
    done = helm.run(
        "lint", "--strict", str(helm.chart), "-f", str(CHART / "ci/values" / f"{values}.yaml")
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dependencies_pinned(helm):
    pins = {d["name"]: d["version"] for d in helm.dependencies}
    assert pins == {"jupyterhub": "4.4.0", "dask-gateway": "2026.3.0"}


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_manifests_valid(rendered, version):
    checked = 0
    for name, manifests in rendered.items():
        for doc in manifests:
            if doc["kind"] in CRD_KINDS:
                continue
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
                raise AssertionError(f"{where}: {exc.message} at {list(exc.path)}") from None
            checked += 1
    assert checked > 60


@pytest.mark.parametrize("values", VALUES_FILES)
def test_upstream_sections(values):
    z2jh = without_required(yaml.safe_load((SCHEMAS / "z2jh-values.schema.yaml").read_text()))
    gateway = yaml.safe_load((SCHEMAS / "dask-gateway-values.schema.yaml").read_text())
    merged = chart_values(values)
    assert errors(z2jh, merged["jupyterhub"]) == []
    assert errors(without_required(gateway), merged["dask-gateway"]) == []


def test_upstream_schema_catches_a_wrong_key():
    z2jh = without_required(yaml.safe_load((SCHEMAS / "z2jh-values.schema.yaml").read_text()))
    values = copy.deepcopy(chart_values("minimal"))
    values["jupyterhub"]["hub"]["extraEnvv"] = {}
    assert errors(z2jh, values["jupyterhub"]) != []


@pytest.mark.parametrize("values", VALUES_FILES)
def test_afhub_section_schema(values):
    schema = chart_schema.load_schema()
    assert errors(schema, chart_values(values)) == []


def test_helm_refuses_unknown_afhub_key(helm, tmp_path):
    """helm itself checks values against values.schema.json: a misspelt key fails the install."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"afhub": {"culling": {"timeout": 60}}}))
    done = helm.run("template", "af", str(helm.chart), "-f", str(bad))
    assert done.returncode != 0
    assert "timeout" in done.stderr


def test_every_key_described_and_closed():
    for path, node in chart_schema.keys(chart_schema.load_schema()):
        assert node.get("description"), f"{'.'.join(path)} has no description"
        if node.get("properties"):
            assert node.get("additionalProperties") is False, ".".join(path)


def test_everything_sets_every_key():
    values = values_of("everything")
    missing = []
    for path, _node in chart_schema.keys(chart_schema.load_schema()):
        here = values
        for key in path:
            if key in ("[]", "<name>"):
                entries = list(here.values()) if isinstance(here, dict) else here
                here = entries[0] if entries else None
                continue
            if not isinstance(here, dict) or key not in here:
                missing.append(".".join(path))
                break
            here = here[key]
    assert missing == []


def test_docs_and_json_schema_in_sync():
    assert chart_schema.main(["--check"]) == 0, "run `make chart`"
    generated = json.loads((CHART / "values.schema.json").read_text())
    assert generated == chart_schema.load_schema()


def test_gpu_fpga_registry_is_the_tests_example():
    example = yaml.safe_load((ROOT / "tests/registry/example.yaml").read_text())
    assert values_of("gpu-fpga")["afhub"]["registry"] == example


def test_services_secure_and_probed(rendered):
    for name, manifests in rendered.items():
        for doc in manifests:
            if doc["kind"] != "Deployment":
                continue
            pod = doc["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            for c in pod["containers"]:
                assert c["securityContext"]["allowPrivilegeEscalation"] is False
                assert c["resources"]["requests"], c["name"]
                assert "livenessProbe" in c, f"{name}: {c['name']}"


def test_gpu_workers_request_their_device(rendered):
    worker = find(rendered["gpu-fpga"], "Deployment", "afhub-fitting-worker-gpu")
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == 1
    assert container["image"].endswith("-cuda")
    assert "afhub-fitting-worker-gpu" not in {d["metadata"]["name"] for d in rendered["minimal"]}


def test_network_policy_admits_only_hub_proxy_and_afhub(rendered):
    policy = find(rendered["minimal"], "NetworkPolicy", "afhub-services")
    peers = policy["spec"]["ingress"][0]["from"]
    components = {p["podSelector"]["matchLabels"].get("component") for p in peers}
    assert components == {"hub", "proxy", None}
    assert all("namespaceSelector" not in p for p in peers)


def test_service_monitors_only_when_asked(rendered):
    kinds = {d["kind"] for d in rendered["minimal"]}
    assert "ServiceMonitor" not in kinds
    monitor = find(rendered["everything"], "ServiceMonitor", "afhub-hub")
    assert monitor["spec"]["endpoints"][0]["path"] == "/hub/metrics"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_dashboards_deployment(rendered):
    """The dashboards run the notebook image (Voila, voila-apps/), as the hub service
    dashboards, reach the facility through the proxy, and never hold the database URL."""
    deployment = find(rendered["everything"], "Deployment", "afhub-dashboards")
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == "registry.example.org/afhub/notebook-cpu:2026.12.1"
    assert container["imagePullPolicy"] == "Always"
    assert container["command"] == ["python", "-m", "afhub.web.dashboards"]
    assert container["args"] == ["--ViewerKernelManager.pool_size=4"]
    minimal = find(rendered["minimal"], "Deployment", "afhub-dashboards")["spec"]["template"]
    assert minimal["spec"]["containers"][0]["args"] == ["--ViewerKernelManager.pool_size=2"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "AFHUB_DB_URL" not in env
    assert env["JUPYTERHUB_SERVICE_NAME"] == "dashboards"
    assert env["AFHUB_FACILITY_URL"] == "http://proxy-public/services/facility/"
    assert pod["metadata"]["labels"]["hub.jupyter.org/network-access-proxy-http"] == "true"
    assert container["readinessProbe"]["tcpSocket"] == {"port": "http"}
    service = find(rendered["everything"], "Service", "afhub-dashboards")
    assert service["spec"]["ports"][0]["port"] == 8087
    assert "annotations" not in service["metadata"]  # no /metrics of its own
    pdb = find(rendered["everything"], "PodDisruptionBudget", "afhub-dashboards")
    assert pdb["spec"]["minAvailable"] == 1
    # the pages' Deployment keeps the services' image and its database URL
    pages = find(rendered["minimal"], "Deployment", "afhub-pages")["spec"]["template"]
    pages_env = {e["name"] for e in pages["spec"]["containers"][0]["env"]}
    assert "AFHUB_DB_URL" in pages_env
    assert pages["spec"]["containers"][0]["image"].startswith("ghcr.io/afhub/hub:")
