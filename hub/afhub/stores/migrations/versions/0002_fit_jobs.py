"""fit jobs and results

Revision ID: 0002_fit_jobs
Revises: 0001
Create Date: 2026-11-25 17:41:00.284309
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_fit_jobs"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # fit jobs and their per-patch results (afhub.stores.fitting)
    op.create_table(
        "afhub_fit_jobs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("group_path", sa.String(length=255), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("operation", sa.String(length=16), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("measurement", sa.String(length=255), nullable=True),
        sa.Column("workspace_sha256", sa.String(length=64), nullable=False),
        sa.Column("request", sa.LargeBinary(), nullable=False),
        sa.Column("patch_count", sa.Integer(), nullable=False),
        sa.Column("done_count", sa.Integer(), nullable=False),
        sa.Column("wall_seconds", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("ledger_interval_id", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_afhub_fit_jobs")),
    )
    with op.batch_alter_table("afhub_fit_jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_afhub_fit_jobs_group_state", ["group_path", "state"], unique=False
        )
        batch_op.create_index("ix_afhub_fit_jobs_owner_state", ["owner", "state"], unique=False)
        batch_op.create_index(
            "ix_afhub_fit_jobs_state_created", ["state", "created_at"], unique=False
        )

    op.create_table(
        "afhub_fit_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("patch_index", sa.Integer(), nullable=False),
        sa.Column("patch_name", sa.String(length=255), nullable=True),
        sa.Column("cache_key", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("engine", sa.String(length=16), nullable=False),
        sa.Column("cached", sa.Integer(), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["afhub_fit_jobs.id"],
            name=op.f("fk_afhub_fit_results_job_id_afhub_fit_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_afhub_fit_results")),
        sa.UniqueConstraint(
            "job_id", "patch_index", name=op.f("uq_afhub_fit_results_job_id_patch_index")
        ),
    )
    with op.batch_alter_table("afhub_fit_results", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_afhub_fit_results_cache_key"), ["cache_key"], unique=False
        )


def downgrade() -> None:
    # fit jobs and their per-patch results (afhub.stores.fitting)
    with op.batch_alter_table("afhub_fit_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_afhub_fit_results_cache_key"))

    op.drop_table("afhub_fit_results")
    with op.batch_alter_table("afhub_fit_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_afhub_fit_jobs_state_created")
        batch_op.drop_index("ix_afhub_fit_jobs_owner_state")
        batch_op.drop_index("ix_afhub_fit_jobs_group_state")

    op.drop_table("afhub_fit_jobs")
