"""resource registry: providers, resources and a revision counter

Revision ID: 0003_registry
Revises: 0002_fit_jobs
Create Date: 2026-11-25 20:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_registry"
down_revision = "0002_fit_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # the resource registry (afhub.stores.registry)
    state = op.create_table(
        "afhub_registry_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_afhub_registry_state")),
    )
    op.bulk_insert(state, [{"id": 1, "revision": 0}])
    op.create_table(
        "afhub_registry_providers",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_afhub_registry_providers")),
    )
    op.create_table(
        "afhub_registry_resources",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("provider", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=8), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_afhub_registry_resources")),
    )
    with op.batch_alter_table("afhub_registry_resources", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_afhub_registry_resources_provider"), ["provider"], unique=False
        )


def downgrade() -> None:
    # the resource registry (afhub.stores.registry)
    with op.batch_alter_table("afhub_registry_resources", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_afhub_registry_resources_provider"))
    op.drop_table("afhub_registry_resources")
    op.drop_table("afhub_registry_providers")
    op.drop_table("afhub_registry_state")
