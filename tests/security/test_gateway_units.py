"""Issue 11, the pure parts behind the gateway's fixes: which requests are cross-site,
which token belongs to which server, the names users are known by, and how credentials
are taken out of URLs before they are logged. The end-to-end tests in this folder hold the
behaviour; these pin the rules down case by case."""

from __future__ import annotations

import logging

import pytest
from aiohttp.test_utils import make_mocked_request
from aiohttp.web import HTTPUnauthorized

from afhub.services.gateway.auth import (
    has_secret_parameter,
    hub_username,
    scrub_url,
    started_by_server,
)
from afhub.services.gateway.middleware import is_cross_site
from afhub.services.kit.bodies import scrub_uri
from afhub.services.logfilter import ScrubSecrets, scrub


def request(method="POST", **headers):
    return make_mocked_request(method, "/api/v1/clusters/", headers={"Host": "hub:8000", **headers})


@pytest.mark.parametrize(
    ("headers", "cross"),
    [
        ({}, False),  # the Python client: no Origin, no Sec-Fetch-Site
        ({"Origin": "http://hub:8000"}, False),
        ({"Origin": "http://hub:8000", "Sec-Fetch-Site": "same-origin"}, False),
        ({"Origin": "http://evil.example"}, True),
        ({"Origin": "null"}, True),  # a sandboxed dashboard or a data: page
        ({"Sec-Fetch-Site": "cross-site"}, True),
        ({"Sec-Fetch-Site": "same-site", "Origin": "http://other.hub:8000"}, True),
        ({"Origin": "http://hub:8000", "X-Forwarded-Host": "public.example"}, True),
        ({"Origin": "https://public.example", "X-Forwarded-Host": "public.example"}, False),
    ],
)
def test_cross_site_requests_are_recognised(headers, cross):
    assert is_cross_site(request(**headers)) is cross


def test_a_servers_own_token_names_its_server():
    own = ["access:servers!server=ann/", "users:activity!user=ann", "read:users:name!user=ann"]
    assert started_by_server("ann", own) == ""
    named = ["access:servers!server=ann/gpu", "access:services!service=dask-gateway"]
    assert started_by_server("ann", named) == "gpu"
    # a token of the token page reaches every server of the user: tied to none
    assert started_by_server("ann", [*own, "access:servers!user=ann"]) is None
    two = ["access:servers!server=ann/a", "access:servers!server=ann/b"]
    assert started_by_server("ann", two) is None
    assert started_by_server("ann", ["access:servers!server=bob/"]) is None
    assert started_by_server("ann", []) is None


def test_hub_names_are_kept_and_services_refused():
    assert hub_username({"kind": "user", "name": "github:octocat"}) == "github:octocat"
    assert hub_username({"name": "ann"}) == "ann"
    with pytest.raises(HTTPUnauthorized) as refused:
        hub_username({"kind": "service", "name": "ann"})
    assert "service" in refused.value.reason


def test_credentials_are_taken_out_of_urls():
    assert scrub_url("/api/v1/clusters/?token=abc&x=1") == "/api/v1/clusters/?token=[secret]&x=1"
    assert (
        scrub_url("/clusters/c/status?ACCESS_TOKEN=abc")
        == "/clusters/c/status?ACCESS_TOKEN=[secret]"
    )
    assert scrub_url("/oauth_callback?code=abc&state=s") == "/oauth_callback?code=[secret]&state=s"
    assert scrub_url("/clusters/c/status") == "/clusters/c/status"
    assert scrub_url("/clusters/c/~Ab_c-9/status?x=1") == "/clusters/c/~[secret]/status?x=1"
    assert has_secret_parameter({"Token": "x"})
    assert not has_secret_parameter({"state": "x"})
    assert scrub_uri("/services/facility/join/Abc_def-123456?next=x") == (
        "/services/facility/join/[secret]?next=x"
    )
    assert scrub_uri("/services/fitting/api/jobs?state=done&token=z") == (
        "/services/fitting/api/jobs?state=done&token=[secret]"
    )
    # the hub's redirect to its login page carries the token URL-encoded inside next=
    line = "302 GET /hub/home?token=[secret] -> /hub/login?next=%2Fhub%2Fhome%3Ftoken%3Dabc123"
    assert scrub(line).endswith("next=%2Fhub%2Fhome%3Ftoken%3D[secret]")
    assert scrub("/x?a=1%26access_token%3Dzz%26b%3D2") == "/x?a=1%26access_token%3D[secret]%26b%3D2"
    assert scrub("tokens in URLs are refused") == "tokens in URLs are refused"


def test_the_hub_log_filter_rewrites_records():
    record = logging.LogRecord(
        "JupyterHub",
        logging.INFO,
        __file__,
        1,
        "GET %s",
        ("/hub/login?next=%3Ftoken%3Dsecret1",),
        None,
    )
    assert ScrubSecrets().filter(record) is True
    assert "secret1" not in record.getMessage()
    assert "[secret]" in record.getMessage()
