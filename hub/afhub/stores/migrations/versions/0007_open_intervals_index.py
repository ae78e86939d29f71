"""open intervals by group: a partial index on the ledger's open rows (pending, running),
keyed by group and holding what the quota decision sums, so that the decision's scan of a
chain's subtrees reads a small index (no closed rows) and no table rows.

Revision ID: 0007_open_intervals_index
Revises: 0006_contribution_rollup
Create Date: 2026-12-05 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_open_intervals_index"
down_revision = "0006_contribution_rollup"
branch_labels = None
depends_on = None

#: as ``afhub.stores.models.OPEN_PREDICATE`` (a migration keeps its own copy)
OPEN = "state IN ('pending', 'running')"


def upgrade() -> None:
    with op.batch_alter_table("afhub_ledger", schema=None) as batch_op:
        batch_op.create_index(
            "ix_afhub_ledger_open_by_group",
            ["group_id", "kind", "cpu_cores", "gpus", "checkpoint_ts", "state"],
            unique=False,
            postgresql_where=sa.text(OPEN),
            sqlite_where=sa.text(OPEN),
        )


def downgrade() -> None:
    with op.batch_alter_table("afhub_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_afhub_ledger_open_by_group")
