"""identities: random public ids for invitations; charges of deleted groups keep the
identity of the ancestor that survived them, not a name a new group may take

Revision ID: 0005_identities
Revises: 0004_devices
Create Date: 2026-12-04 15:00:00.000000
"""

import secrets
import string
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005_identities"
down_revision = "0004_devices"
branch_labels = None
depends_on = None

_ALPHABET = string.ascii_letters + string.digits


def _public_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(22))


def _aware(value):
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def upgrade() -> None:
    # columns only (ALTER TABLE ADD COLUMN): no table is copied, so SQLite's foreign keys
    # never cascade a drop into the rows that refer to it
    with op.batch_alter_table("afhub_invitations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("public_id", sa.String(length=32), nullable=True))
    with op.batch_alter_table("afhub_ledger", schema=None) as batch_op:
        batch_op.add_column(sa.Column("orphan_of_id", sa.Integer(), nullable=True))
    bind = op.get_bind()
    # existing invitations get random ids (their sequential ones are no longer shown)
    for (row_id,) in bind.execute(sa.text("SELECT id FROM afhub_invitations")).all():
        bind.execute(
            sa.text("UPDATE afhub_invitations SET public_id = :p WHERE id = :i"),
            {"p": _public_id(), "i": row_id},
        )
    # charges of groups deleted before this revision carry only the deleted group's path:
    # they belong to the deepest ancestor path that still exists *and* already existed when
    # the charge was admitted (a group created since under that name is another identity)
    groups = {
        path: (gid, _aware(created))
        for gid, path, created in bind.execute(
            sa.text("SELECT id, path, created_at FROM afhub_groups")
        ).all()
    }
    orphans = bind.execute(
        sa.text("SELECT id, group_path, admitted_ts FROM afhub_ledger WHERE group_id IS NULL")
    ).all()
    for row_id, path, admitted_ts in orphans:
        admitted = datetime.fromtimestamp(admitted_ts, UTC)
        parts = path.split("/")
        for depth in range(len(parts) - 1, 0, -1):
            found = groups.get("/".join(parts[:depth]))
            if found is not None and (found[1] is None or found[1] <= admitted):
                bind.execute(
                    sa.text("UPDATE afhub_ledger SET orphan_of_id = :g WHERE id = :i"),
                    {"g": found[0], "i": row_id},
                )
                break
    with op.batch_alter_table("afhub_invitations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_afhub_invitations_public_id"), ["public_id"], unique=True
        )
    with op.batch_alter_table("afhub_ledger", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_afhub_ledger_orphan_of_id"), ["orphan_of_id"])


def downgrade() -> None:
    with op.batch_alter_table("afhub_ledger", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_afhub_ledger_orphan_of_id"))
    with op.batch_alter_table("afhub_invitations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_afhub_invitations_public_id"))
    # plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+): a batch copy of the table would
    # drop the old one, and SQLite's foreign keys would cascade that into its referrers
    op.execute("ALTER TABLE afhub_ledger DROP COLUMN orphan_of_id")
    op.execute("ALTER TABLE afhub_invitations DROP COLUMN public_id")
