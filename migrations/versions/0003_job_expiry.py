"""Add jobs.expires_at: a job not started by then is cancelled instead of run.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import context, op

from pgqueue.migrate import keep_version_table

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _schema() -> str:
    return str(context.config.attributes.get("pgqueue_schema", "pgqueue"))


def upgrade() -> None:
    # Nullable with no default: adding it rewrites nothing and locks only briefly.
    op.execute(f'ALTER TABLE "{_schema()}".jobs ADD COLUMN expires_at timestamptz')
    keep_version_table("0003")


def downgrade() -> None:
    op.execute(f'ALTER TABLE "{_schema()}".jobs DROP COLUMN IF EXISTS expires_at')
    keep_version_table('0002')
