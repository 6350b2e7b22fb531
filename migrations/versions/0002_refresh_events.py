"""refresh_events: one row per refresh attempt, for the status page and API.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "refresh_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("appid", sa.String(64), nullable=False),
        sa.Column("at", sa.Double, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("errcode", sa.Integer),
        sa.Column("errmsg", sa.String(512)),
        sa.Column("rid", sa.String(128)),
        sa.Column("fingerprint", sa.String(16)),
        sa.Column("latency", sa.Double, nullable=False),
    )
    op.create_index("ix_refresh_events_appid", "refresh_events", ["appid"])
    op.create_index("ix_refresh_events_at", "refresh_events", ["at"])


def downgrade() -> None:
    op.drop_table("refresh_events")
