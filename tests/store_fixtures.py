"""Database fixtures shared by the store-level tests (tests/stores, tests/spawners,
tests/dask): every test runs on SQLite always and on PostgreSQL when
AFHUB_TEST_POSTGRES_URL is set. Import the fixtures into a conftest or test module."""

from __future__ import annotations

import pytest

from afhub.stores.facade import Stores
from tests.support.databases import (
    POSTGRES_SKIP_REASON,
    empty_postgres,
    fresh_sqlite,
    postgres_database,
    postgres_server_url,
    sqlite_template,
)


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory):
    with sqlite_template(tmp_path_factory.mktemp("sqlite-template")) as path:
        yield path


@pytest.fixture(scope="session")
def _postgres_url():
    server = postgres_server_url()
    if server is None:
        pytest.skip(POSTGRES_SKIP_REASON)
    with postgres_database(server) as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path, _sqlite_template):
    if request.param == "sqlite":
        return fresh_sqlite(_sqlite_template, tmp_path)
    url = request.getfixturevalue("_postgres_url")
    empty_postgres(url)
    return url


@pytest.fixture
def stores(db_url):
    opened = Stores.open(db_url, migrate=False)
    yield opened
    opened.close()
