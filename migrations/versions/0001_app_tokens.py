"""app_tokens: one row per app with current and previous token, version and last error.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "app_tokens",
        sa.Column("appid", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("access_token", sa.String(2048)),
        sa.Column("expires_at", sa.Double),
        sa.Column("fetched_at", sa.Double),
        sa.Column("source", sa.String(16)),
        sa.Column("previous_token", sa.String(2048)),
        sa.Column("previous_valid_until", sa.Double),
        sa.Column("last_errcode", sa.Integer),
        sa.Column("last_errmsg", sa.String(512)),
        sa.Column("last_rid", sa.String(128)),
        sa.Column("last_error_at", sa.Double),
        sa.Column("blocked_until", sa.Double),
    )


def downgrade() -> None:
    op.drop_table("app_tokens")
