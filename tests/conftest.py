"""Fixtures shared by the whole test suite."""

from __future__ import annotations

import pytest

from tests.facility import Facility


@pytest.fixture(scope="session")
def facility(tmp_path_factory) -> Facility:
    """One real local facility (hub + proxy + local spawner) for the whole session."""
    fac = Facility(tmp_path_factory.mktemp("facility"))
    fac.start()
    yield fac
    fac.stop()
    assert not fac.leftover, f"processes left after stop: {fac.leftover}"


@pytest.fixture
def new_user(facility):
    """Make a fresh local account; returns ``(name, password)``."""
    counter = {"n": 0}

    def make(prefix: str = "user") -> tuple[str, str]:
        import uuid

        counter["n"] += 1
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        return name, facility.add_user(name)

    return make
