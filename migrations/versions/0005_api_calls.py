"""api_calls: calls tokensvc forwarded per app, WeChat API and China day, summed by every replica.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_calls",
        sa.Column("day", sa.Integer, primary_key=True),
        sa.Column("appid", sa.String(64), primary_key=True),
        sa.Column("api", sa.String(256), primary_key=True),
        sa.Column("calls", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("api_calls")
