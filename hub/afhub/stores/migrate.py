"""Run the packaged alembic migrations programmatically."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
_NOT_MODELS = {"migrations", "testing", "migrate"}


def import_all_models() -> None:
    """Import every module of :mod:`afhub.stores`, so that every table defined on
    :class:`~afhub.stores.models.Base` (stores of later features too) is in its metadata."""
    import afhub.stores

    for module in pkgutil.iter_modules(afhub.stores.__path__):
        if module.name not in _NOT_MODELS:
            importlib.import_module(f"afhub.stores.{module.name}")


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # '%' must be escaped for configparser (passwords may contain it)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` up to ``revision`` (the latest by default)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)
