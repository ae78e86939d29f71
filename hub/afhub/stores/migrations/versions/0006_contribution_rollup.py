"""contribution rollup: what closed charges delivered per resource, group and user, by UTC
day and by week, so that the contributions report reads days and weeks instead of every
charge of the period; an index on the ledger's (resource, start_ts) for the partial days at
a period's edges. Backfilled from the closed charges already in the ledger.

Revision ID: 0006_contribution_rollup
Revises: 0005_identities
Create Date: 2026-12-05 03:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_contribution_rollup"
down_revision = "0005_identities"
branch_labels = None
depends_on = None

DAY = 86400
WEEK = 7 * DAY

#: every closed charge cut at UTC midnights (a charge of no length: one empty piece on its
#: start day), summed per (resource, day, group, user); ``{floor}``, ``{least}`` and
#: ``{greatest}`` are the dialect's spellings
_DAYS = """
INSERT INTO afhub_contribution_rollup (span_days, resource, start_ts, group_path, user_name,
    core_seconds, gpu_seconds, charges, fits, first_start_ts)
WITH RECURSIVE pieces(id, day, stop) AS (
    SELECT id, {floor}, stop_ts FROM afhub_ledger
    WHERE state = 'closed' AND start_ts IS NOT NULL AND stop_ts IS NOT NULL
    UNION ALL
    SELECT id, day + {day}, stop FROM pieces WHERE day + {day} < stop
)
SELECT 1, l.resource, p.day, l.group_path, l.user_name,
    SUM(l.cpu_cores * ({least}(l.stop_ts, p.day + {day}) - {greatest}(l.start_ts, p.day))),
    SUM(l.gpus * ({least}(l.stop_ts, p.day + {day}) - {greatest}(l.start_ts, p.day))),
    SUM(CASE WHEN l.start_ts >= p.day THEN 1 ELSE 0 END),
    SUM(CASE WHEN l.start_ts >= p.day AND l.kind = 'fit' THEN 1 ELSE 0 END),
    MIN(l.start_ts)
FROM pieces p JOIN afhub_ledger l ON l.id = p.id
GROUP BY l.resource, p.day, l.group_path, l.user_name
"""

#: the days folded into weeks from the epoch (a charge's start day lies in one week)
_WEEKS = """
INSERT INTO afhub_contribution_rollup (span_days, resource, start_ts, group_path, user_name,
    core_seconds, gpu_seconds, charges, fits, first_start_ts)
SELECT 7, resource, (start_ts / {week}) * {week} AS week, group_path, user_name,
    SUM(core_seconds), SUM(gpu_seconds), SUM(charges), SUM(fits), MIN(first_start_ts)
FROM afhub_contribution_rollup WHERE span_days = 1
GROUP BY resource, (start_ts / {week}) * {week}, group_path, user_name
"""


def upgrade() -> None:
    op.create_table(
        "afhub_contribution_rollup",
        sa.Column("span_days", sa.Integer(), nullable=False),
        sa.Column("resource", sa.String(length=255), nullable=False),
        sa.Column("start_ts", sa.BigInteger(), nullable=False),
        sa.Column("group_path", sa.String(length=255), nullable=False),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("core_seconds", sa.Float(), nullable=False),
        sa.Column("gpu_seconds", sa.Float(), nullable=False),
        sa.Column("charges", sa.Integer(), nullable=False),
        sa.Column("fits", sa.Integer(), nullable=False),
        sa.Column("first_start_ts", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "span_days",
            "resource",
            "start_ts",
            "group_path",
            "user_name",
            name=op.f("pk_afhub_contribution_rollup"),
        ),
    )
    with op.batch_alter_table("afhub_ledger", schema=None) as batch_op:
        batch_op.create_index("ix_afhub_ledger_resource_start", ["resource", "start_ts"])
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        spelling = {
            "floor": f"CAST(FLOOR(start_ts / {DAY}) AS BIGINT) * {DAY}",
            "least": "LEAST",
            "greatest": "GREATEST",
        }
    else:  # SQLite: CAST truncates (times are after the epoch); MIN/MAX of two values
        spelling = {
            "floor": f"CAST(start_ts / {DAY} AS INTEGER) * {DAY}",
            "least": "MIN",
            "greatest": "MAX",
        }
    bind.execute(sa.text(_DAYS.format(day=DAY, **spelling)))
    bind.execute(sa.text(_WEEKS.format(week=WEEK)))


def downgrade() -> None:
    with op.batch_alter_table("afhub_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_afhub_ledger_resource_start")
    op.drop_table("afhub_contribution_rollup")
