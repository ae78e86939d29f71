"""The fitting service fuzzed from its OpenAPI document through the real facility (a real
hub token, the proxy): no input gives a 5xx, and every 4xx carries a message."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from afhub.services.fitting.app import OPENAPI_PATH
from tests.fitting_service.conftest import call, user_token

pytestmark = [pytest.mark.facility, pytest.mark.slow]

schema = schemathesis.openapi.from_path(str(OPENAPI_PATH))


@pytest.fixture(scope="module")
def fuzzer(facility):
    token = user_token(facility, "sec-fit-fuzz")
    call(facility, token, "GET", "jobs")  # the service is up
    return facility, token


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_input_gives_a_server_error(case, fuzzer):
    facility, token = fuzzer
    response = case.call(
        base_url=f"{facility.url.rstrip('/')}/services/fitting",
        headers={"Authorization": f"token {token}"},
        timeout=60,
    )
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
    )
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str), response.text[:300]
        assert body["error"], response.text[:300]
