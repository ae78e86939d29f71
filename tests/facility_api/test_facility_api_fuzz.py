"""The facility API fuzzed from its OpenAPI document: no input gives a 5xx."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from afhub.services.facility_api.app import OPENAPI_PATH
from afhub.stores.facade import Stores
from tests.support.databases import fresh_sqlite, sqlite_template

from .conftest import PREFIX, ServiceUnderTest

schema = schemathesis.openapi.from_path(str(OPENAPI_PATH))


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    with sqlite_template(folder) as template:
        stores = Stores.open(fresh_sqlite(template, folder), migrate=False)
    for path in ["atlas", "atlas/higgs", "atlas/higgs/students"]:
        stores.groups.create(path)
    stores.groups.add_member("atlas/higgs", "hana", role="admin")
    running = ServiceUnderTest(stores).start()
    running.user("root", admin=True)
    running.user("hana")
    yield running
    running.stop()
    stores.close()


@pytest.mark.parametrize("who", ["root", "hana", None])
@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_input_gives_a_server_error(case, fuzz_service, who):
    headers = {"Authorization": f"token token-of-{who}"} if who else {}
    response = case.call(
        base_url=f"http://127.0.0.1:{fuzz_service.port}{PREFIX.rstrip('/')}",
        headers=headers,
        timeout=30,
    )
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    )
    if response.status_code >= 400 and case.path != "/api/openapi.yaml":
        body = response.json()
        assert body["status"] == response.status_code
        assert body["error"]
