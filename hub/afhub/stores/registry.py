"""The resource registry (providers and resources), in the facility database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from afhub.stores.models import Base, UTCDateTime, utcnow


class RegistryState(Base):
    """One row (id 1): the registry's revision, bumped by every write."""

    __tablename__ = "afhub_registry_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)


class ProviderRow(Base):
    __tablename__ = "afhub_registry_providers"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    #: "api" (facility API, CLI) or "file" (the declarative AFHUB_REGISTRY file)
    source: Mapped[str] = mapped_column(String(8))
    #: order of the entries in the registry document
    position: Mapped[int] = mapped_column(Integer)
    #: the entry as JSON, in the YAML shape of docs/resources.md
    entry: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ResourceRow(Base):
    __tablename__ = "afhub_registry_resources"

    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    provider: Mapped[str] = mapped_column(String(63), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    source: Mapped[str] = mapped_column(String(8))
    position: Mapped[int] = mapped_column(Integer)
    entry: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
