"""device allocations: exclusive accelerator slots held by servers

Revision ID: 0004_devices
Revises: 0003_registry
Create Date: 2026-11-25 20:15:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004_devices"
down_revision = "0003_registry"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # accelerator slots held by servers (afhub.stores.devices)
    op.create_table(
        "afhub_device_allocations",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("resource", sa.String(length=63), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("server_name", sa.String(length=255), nullable=False),
        sa.Column("interval_id", BIG_ID, nullable=True),
        sa.Column("allocated_ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_afhub_device_allocations")),
        sa.UniqueConstraint(
            "resource", "slot", name=op.f("uq_afhub_device_allocations_resource_slot")
        ),
    )
    with op.batch_alter_table("afhub_device_allocations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_afhub_device_allocations_owner", ["user_name", "server_name"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("afhub_device_allocations", schema=None) as batch_op:
        batch_op.drop_index("ix_afhub_device_allocations_owner")
    op.drop_table("afhub_device_allocations")
