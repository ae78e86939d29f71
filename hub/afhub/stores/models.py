"""Tables. The schema is created and changed only by the alembic migrations
(:mod:`afhub.stores.migrations`); these classes must match the latest revision.

Time columns of the usage ledger are seconds since the Unix epoch (double precision) so
that the interval arithmetic is the same SQL on SQLite and PostgreSQL; other time columns
are timezone-aware datetimes stored as UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

BigId = BigInteger().with_variant(Integer, "sqlite")


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out; stored as naive UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):  # noqa: ARG002 (TypeDecorator signature)
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("datetimes stored by afhub must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):  # noqa: ARG002 (TypeDecorator signature)
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(at: datetime | None) -> str | None:
    """An instant as the records' ``to_dict`` give it: ISO 8601, or ``None`` for none."""
    return at.isoformat() if at else None


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Group(Base):
    __tablename__ = "afhub_groups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: full path, e.g. ``atlas/higgs``; unique
    path: Mapped[str] = mapped_column(String(255), unique=True)
    #: last segment of the path
    name: Mapped[str] = mapped_column(String(63))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("afhub_groups.id", ondelete="RESTRICT"), index=True
    )
    #: 1 for a top-level group
    depth: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GroupClosure(Base):
    """Every (ancestor, descendant) pair, self pairs included: subtree queries without
    recursion."""

    __tablename__ = "afhub_group_closure"

    ancestor_id: Mapped[int] = mapped_column(
        ForeignKey("afhub_groups.id", ondelete="CASCADE"), primary_key=True
    )
    descendant_id: Mapped[int] = mapped_column(
        ForeignKey("afhub_groups.id", ondelete="CASCADE"), primary_key=True
    )
    #: 0 for the self pair, 1 for a parent, ...
    distance: Mapped[int] = mapped_column(Integer)

    __table_args__ = (Index("ix_afhub_group_closure_descendant", "descendant_id", "ancestor_id"),)


class User(Base):
    __tablename__ = "afhub_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: the JupyterHub user name
    name: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    is_facility_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    default_group_id: Mapped[int | None] = mapped_column(
        ForeignKey("afhub_groups.id", ondelete="SET NULL")
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Membership(Base):
    __tablename__ = "afhub_memberships"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("afhub_groups.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("afhub_users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    #: ``member`` or ``admin``
    role: Mapped[str] = mapped_column(String(16))
    #: where the membership came from: ``manual``, ``invitation`` or ``claims``
    source: Mapped[str] = mapped_column(String(16), default="manual")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Quota(Base):
    """One group's limits; a NULL limit means no limit at this node."""

    __tablename__ = "afhub_quotas"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("afhub_groups.id", ondelete="CASCADE"), primary_key=True
    )
    gpu_hours: Mapped[float | None] = mapped_column(Float)
    cpu_core_hours: Mapped[float | None] = mapped_column(Float)
    max_servers: Mapped[int | None] = mapped_column(Integer)
    max_gpus: Mapped[int | None] = mapped_column(Integer)
    max_dask_cores: Mapped[float | None] = mapped_column(Float)
    period: Mapped[str] = mapped_column(String(32), default="month")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(255))


class Invitation(Base):
    """An invitation to join a group. Only the SHA-256 of the token is stored."""

    __tablename__ = "afhub_invitations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: the id people see (API, CLI): random letters and digits, never sequential, so an id
    #: says nothing about how many invitations exist (:func:`new_public_id`)
    public_id: Mapped[str | None] = mapped_column(String(32), unique=True, index=True)
    group_id: Mapped[int] = mapped_column(
        ForeignKey("afhub_groups.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: when set, only a user with this email (case-insensitive) may redeem it
    email: Mapped[str | None] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(16), default="member")
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    max_uses: Mapped[int] = mapped_column(Integer)
    uses_left: Mapped[int] = mapped_column(Integer)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InvitationRedemption(Base):
    __tablename__ = "afhub_invitation_redemptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    invitation_id: Mapped[int] = mapped_column(
        ForeignKey("afhub_invitations.id", ondelete="CASCADE"), index=True
    )
    user_name: Mapped[str] = mapped_column(String(255))
    redeemed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("invitation_id", "user_name"),)


#: the states of a ledger interval; an open one holds room in its group's quotas
PENDING, RUNNING, CLOSED, FAILED = "pending", "running", "closed", "failed"
OPEN_STATES = (PENDING, RUNNING)
#: the same, as SQL: the predicate of the partial index on open intervals (the decision's
#: statements spell it exactly so, which lets the planners use that index)
OPEN_PREDICATE = "state IN ('pending', 'running')"


class LedgerInterval(Base):
    """One charge: a server, Dask cluster or fit job, charged to one group.

    States: ``pending`` (admitted, starting: holds its slot, accrues nothing), ``running``
    (accrues from ``start_ts``; accrued usage is folded into :class:`UsageHourly` at every
    checkpoint), ``closed`` (stopped at ``stop_ts``), ``failed`` (never started; charged
    nothing).
    """

    __tablename__ = "afhub_ledger"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user_name: Mapped[str] = mapped_column(String(255))
    #: NULL once the group is deleted; ``group_path`` keeps the name for reports
    group_id: Mapped[int | None] = mapped_column(ForeignKey("afhub_groups.id", ondelete="SET NULL"))
    group_path: Mapped[str] = mapped_column(String(255))
    #: once the charged group is deleted: the nearest ancestor that survived it (NULL when
    #: none did). The charge stays in that ancestor's usage; a new group given the deleted
    #: one's name is another identity and never sees it (set by ``GroupStore.delete``)
    orphan_of_id: Mapped[int | None] = mapped_column(Integer, index=True)
    #: ``server``, ``dask`` or ``fit``
    kind: Mapped[str] = mapped_column(String(16))
    #: profile slug or cluster option the charge came from
    resource: Mapped[str] = mapped_column(String(255), default="")
    #: server name ('' for the default server), cluster name or job id
    server_name: Mapped[str] = mapped_column(String(255), default="")
    cpu_cores: Mapped[float] = mapped_column(Float, default=0.0)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16))
    admitted_ts: Mapped[float] = mapped_column(Float)
    start_ts: Mapped[float | None] = mapped_column(Float)
    stop_ts: Mapped[float | None] = mapped_column(Float)
    #: usage up to this instant is already folded into the hourly rollup
    checkpoint_ts: Mapped[float | None] = mapped_column(Float)
    #: when the owner was warned that a budget is spent (enforcement grace starts)
    warned_ts: Mapped[float | None] = mapped_column(Float)
    note: Mapped[str] = mapped_column(String(255), default="")

    @classmethod
    def is_open(cls) -> ColumnElement[bool]:
        """``WHERE`` clause: the interval is pending or running (holds room in quotas)."""
        return cls.state.in_(OPEN_STATES)

    __table_args__ = (
        # covers the quota decision's scan of open intervals (no table lookups)
        Index(
            "ix_afhub_ledger_open",
            "state",
            "group_id",
            "kind",
            "cpu_cores",
            "gpus",
            "checkpoint_ts",
        ),
        # the same scan for one group at a time (the decision's open intervals of every
        # group under each node of the chain), holding only the open rows
        Index(
            "ix_afhub_ledger_open_by_group",
            "group_id",
            "kind",
            "cpu_cores",
            "gpus",
            "checkpoint_ts",
            "state",
            postgresql_where=text(OPEN_PREDICATE),
            sqlite_where=text(OPEN_PREDICATE),
        ),
        Index("ix_afhub_ledger_group_start", "group_id", "start_ts"),
        Index("ix_afhub_ledger_owner", "user_name", "kind", "server_name", "state"),
        # the contributions report's partial days at a period's edges
        Index("ix_afhub_ledger_resource_start", "resource", "start_ts"),
    )


class UsageHourly(Base):
    """Accrued usage per group and UTC hour, rolled up: a group's row counts its whole
    subtree. Written at checkpoints and closes; read by quota decisions."""

    __tablename__ = "afhub_usage_hourly"

    group_id: Mapped[int] = mapped_column(
        ForeignKey("afhub_groups.id", ondelete="CASCADE"), primary_key=True
    )
    #: start of the hour, seconds since the epoch
    hour_ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    cpu_core_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class ContributionRollup(Base):
    """What closed charges delivered, per resource, group and user, by UTC day
    (``span_days`` 1) and by week from the epoch (``span_days`` 7, the contributions
    timeline's weeks). Written when a charge closes; read by the contributions report,
    which takes partial days at a period's edges and running charges from the ledger."""

    __tablename__ = "afhub_contribution_rollup"

    #: 1 (a UTC day) or 7 (a week: ``start_ts`` a multiple of 7 days from the epoch)
    span_days: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: start of the day or week, seconds since the epoch
    start_ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    group_path: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_name: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: core-seconds and GPU-seconds delivered inside the span
    core_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    #: charges (and fit charges among them) that started inside the span
    charges: Mapped[int] = mapped_column(Integer, default=0)
    fits: Mapped[int] = mapped_column(Integer, default=0)
    #: the earliest start of the charges that ran in the span (bounds the ledger rows a
    #: partial day must read)
    first_start_ts: Mapped[float] = mapped_column(Float)


# --- fitting (afhub.stores.fitting) ---------------------------------------------------


class FitJob(Base):
    __tablename__ = "afhub_fit_jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))
    #: group the job is charged to (the owner's default group unless chosen)
    group_path: Mapped[str | None] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    operation: Mapped[str] = mapped_column(String(16))
    #: the FitSettings as JSON
    settings: Mapped[str] = mapped_column(Text)
    measurement: Mapped[str | None] = mapped_column(String(255))
    workspace_sha256: Mapped[str] = mapped_column(String(64))
    #: zlib-compressed JSON ``{"workspace": ..., "patches": [...]}`` (validated)
    request: Mapped[bytes] = mapped_column(LargeBinary)
    patch_count: Mapped[int] = mapped_column(Integer)
    done_count: Mapped[int] = mapped_column(Integer, default=0)
    #: wall-clock limit of each fit, seconds
    wall_seconds: Mapped[float] = mapped_column(Float)
    #: how many times the job was started (more than 1 after a restart)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    ledger_interval_id: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_afhub_fit_jobs_owner_state", "owner", "state"),
        Index("ix_afhub_fit_jobs_group_state", "group_path", "state"),
        Index("ix_afhub_fit_jobs_state_created", "state", "created_at"),
    )


class FitPatchResult(Base):
    __tablename__ = "afhub_fit_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("afhub_fit_jobs.id", ondelete="CASCADE"))
    patch_index: Mapped[int] = mapped_column(Integer)
    patch_name: Mapped[str | None] = mapped_column(String(255))
    cache_key: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16))
    engine: Mapped[str] = mapped_column(String(16))
    #: whether the result was copied from an earlier identical request
    cached: Mapped[int] = mapped_column(Integer, default=0)
    #: the PatchResult as JSON
    result: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("job_id", "patch_index"),)


# --- accelerator slots (afhub.stores.devices) -------------------------------------------


class DeviceAllocation(Base):
    """One accelerator slot held by one server."""

    __tablename__ = "afhub_device_allocations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    #: the registry resource (profile slug)
    resource: Mapped[str] = mapped_column(String(63))
    slot: Mapped[int] = mapped_column(Integer)
    user_name: Mapped[str] = mapped_column(String(255))
    #: '' for the default server
    server_name: Mapped[str] = mapped_column(String(255), default="")
    #: the ledger interval of the server (NULL when charging is off)
    interval_id: Mapped[int | None] = mapped_column(BigId)
    allocated_ts: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("resource", "slot"),
        Index("ix_afhub_device_allocations_owner", "user_name", "server_name"),
    )


# --- the resource registry (afhub.stores.registry) -------------------------------------


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
