"""The pages on Kubernetes: the chart's afhub-pages Deployment and Service, the hub service
``afhub`` pointing at it, and a pages configuration that the pages' app accepts."""

from __future__ import annotations

import json

from afhub.web.app import make_app
from tests.chart.conftest import Helm, find


def test_chart_runs_the_pages_as_the_hub_service_afhub(tmp_path):
    manifests = Helm(tmp_path).template("minimal")
    deployment = find(manifests, "Deployment", "afhub-pages")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "-m", "afhub.web"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["JUPYTERHUB_SERVICE_PREFIX"] == "/services/afhub/"
    assert env["JUPYTERHUB_SERVICE_URL"] == "http://0.0.0.0:8086"
    config = json.loads(env["AFHUB_PAGES_CONFIG"])
    assert config["endpoints"]["facility"] == "http://afhub-facility:8082/services/facility/api/"
    app = make_app(config, prefix=env["JUPYTERHUB_SERVICE_PREFIX"])
    assert app.settings["afhub_endpoints"].fitting.startswith("http://afhub-fitting:8083/")
    service = find(manifests, "Service", "afhub-pages")
    assert service["spec"]["ports"][0]["port"] == 8086
    # the other services send browsers and join links to the pages
    facility = find(manifests, "Deployment", "afhub-facility")
    facility_env = {
        e["name"]: e.get("value")
        for e in facility["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert facility_env["AFHUB_PAGES_PREFIX"] == "/services/afhub/"
