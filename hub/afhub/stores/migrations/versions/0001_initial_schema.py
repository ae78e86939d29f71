"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 17:07:58.029386
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # first schema of the afhub database (groups, quotas, invitations, ledger)
    op.create_table(
        "afhub_groups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["afhub_groups.id"],
            name=op.f("fk_afhub_groups_parent_id_afhub_groups"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_afhub_groups")),
        sa.UniqueConstraint("path", name=op.f("uq_afhub_groups_path")),
    )
    with op.batch_alter_table("afhub_groups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_afhub_groups_parent_id"), ["parent_id"], unique=False)

    op.create_table(
        "afhub_group_closure",
        sa.Column("ancestor_id", sa.Integer(), nullable=False),
        sa.Column("descendant_id", sa.Integer(), nullable=False),
        sa.Column("distance", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["ancestor_id"],
            ["afhub_groups.id"],
            name=op.f("fk_afhub_group_closure_ancestor_id_afhub_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["descendant_id"],
            ["afhub_groups.id"],
            name=op.f("fk_afhub_group_closure_descendant_id_afhub_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "ancestor_id", "descendant_id", name=op.f("pk_afhub_group_closure")
        ),
    )
    with op.batch_alter_table("afhub_group_closure", schema=None) as batch_op:
        batch_op.create_index(
            "ix_afhub_group_closure_descendant", ["descendant_id", "ancestor_id"], unique=False
        )

    op.create_table(
        "afhub_invitations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=False),
        sa.Column("uses_left", sa.Integer(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.Column("created_by", sa.String(length=255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["afhub_groups.id"],
            name=op.f("fk_afhub_invitations_group_id_afhub_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_afhub_invitations")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_afhub_invitations_token_hash")),
    )
    with op.batch_alter_table("afhub_invitations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_afhub_invitations_group_id"), ["group_id"], unique=False
        )

    op.create_table(
        "afhub_ledger",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("group_path", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("resource", sa.String(length=255), nullable=False),
        sa.Column("server_name", sa.String(length=255), nullable=False),
        sa.Column("cpu_cores", sa.Float(), nullable=False),
        sa.Column("gpus", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("admitted_ts", sa.Float(), nullable=False),
        sa.Column("start_ts", sa.Float(), nullable=True),
        sa.Column("stop_ts", sa.Float(), nullable=True),
        sa.Column("checkpoint_ts", sa.Float(), nullable=True),
        sa.Column("warned_ts", sa.Float(), nullable=True),
        sa.Column("note", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["afhub_groups.id"],
            name=op.f("fk_afhub_ledger_group_id_afhub_groups"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_afhub_ledger")),
    )
    with op.batch_alter_table("afhub_ledger", schema=None) as batch_op:
        batch_op.create_index("ix_afhub_ledger_group_start", ["group_id", "start_ts"], unique=False)
        batch_op.create_index(
            "ix_afhub_ledger_owner", ["user_name", "kind", "server_name", "state"], unique=False
        )
        batch_op.create_index(
            "ix_afhub_ledger_open",
            ["state", "group_id", "kind", "cpu_cores", "gpus", "checkpoint_ts"],
            unique=False,
        )

    op.create_table(
        "afhub_quotas",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("gpu_hours", sa.Float(), nullable=True),
        sa.Column("cpu_core_hours", sa.Float(), nullable=True),
        sa.Column("max_servers", sa.Integer(), nullable=True),
        sa.Column("max_gpus", sa.Integer(), nullable=True),
        sa.Column("max_dask_cores", sa.Float(), nullable=True),
        sa.Column("period", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["afhub_groups.id"],
            name=op.f("fk_afhub_quotas_group_id_afhub_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", name=op.f("pk_afhub_quotas")),
    )
    op.create_table(
        "afhub_usage_hourly",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("hour_ts", sa.BigInteger(), nullable=False),
        sa.Column("cpu_core_seconds", sa.Float(), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["afhub_groups.id"],
            name=op.f("fk_afhub_usage_hourly_group_id_afhub_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "hour_ts", name=op.f("pk_afhub_usage_hourly")),
    )
    op.create_table(
        "afhub_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("is_facility_admin", sa.Boolean(), nullable=False),
        sa.Column("default_group_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["default_group_id"],
            ["afhub_groups.id"],
            name=op.f("fk_afhub_users_default_group_id_afhub_groups"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_afhub_users")),
        sa.UniqueConstraint("name", name=op.f("uq_afhub_users_name")),
    )
    op.create_table(
        "afhub_invitation_redemptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("invitation_id", sa.Integer(), nullable=False),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("redeemed_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["invitation_id"],
            ["afhub_invitations.id"],
            name=op.f("fk_afhub_invitation_redemptions_invitation_id_afhub_invitations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_afhub_invitation_redemptions")),
        sa.UniqueConstraint(
            "invitation_id",
            "user_name",
            name=op.f("uq_afhub_invitation_redemptions_invitation_id_user_name"),
        ),
    )
    with op.batch_alter_table("afhub_invitation_redemptions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_afhub_invitation_redemptions_invitation_id"),
            ["invitation_id"],
            unique=False,
        )

    op.create_table(
        "afhub_memberships",
        sa.Column("group_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["afhub_groups.id"],
            name=op.f("fk_afhub_memberships_group_id_afhub_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["afhub_users.id"],
            name=op.f("fk_afhub_memberships_user_id_afhub_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", "user_id", name=op.f("pk_afhub_memberships")),
    )
    with op.batch_alter_table("afhub_memberships", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_afhub_memberships_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    # first schema of the afhub database (groups, quotas, invitations, ledger)
    with op.batch_alter_table("afhub_memberships", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_afhub_memberships_user_id"))

    op.drop_table("afhub_memberships")
    with op.batch_alter_table("afhub_invitation_redemptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_afhub_invitation_redemptions_invitation_id"))

    op.drop_table("afhub_invitation_redemptions")
    op.drop_table("afhub_users")
    op.drop_table("afhub_usage_hourly")
    op.drop_table("afhub_quotas")
    with op.batch_alter_table("afhub_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_afhub_ledger_open")
        batch_op.drop_index("ix_afhub_ledger_owner")
        batch_op.drop_index("ix_afhub_ledger_group_start")

    op.drop_table("afhub_ledger")
    with op.batch_alter_table("afhub_invitations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_afhub_invitations_group_id"))

    op.drop_table("afhub_invitations")
    with op.batch_alter_table("afhub_group_closure", schema=None) as batch_op:
        batch_op.drop_index("ix_afhub_group_closure_descendant")

    op.drop_table("afhub_group_closure")
    with op.batch_alter_table("afhub_groups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_afhub_groups_parent_id"))

    op.drop_table("afhub_groups")
