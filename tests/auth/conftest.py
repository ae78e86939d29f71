"""Fixtures for the CILogon tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.auth.oidc import OidcProvider


@pytest.fixture(scope="session")
def oidc_provider(tmp_path_factory) -> Iterator[OidcProvider]:
    """One OpenID Connect provider (oidc-provider-mock) for the whole test session."""
    provider = OidcProvider(tmp_path_factory.mktemp("oidc") / "provider.log").start()
    yield provider
    provider.stop()
