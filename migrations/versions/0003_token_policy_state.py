"""app_tokens: policy state for proven-dead tokens; the previous token kept only as a hash.

Adds ``dead_at``, ``last_success_at``, ``force_blocked_until`` (quota pauses per mode),
``early_deaths`` and ``unverified_refreshes`` (JSON lists of UTC epoch seconds), ``failures``
and ``retry_at`` (the backoff every replica respects), ``revision`` (every write), and replaces
``previous_token`` (a second live token at rest, never read) by ``previous_sha256``. The
previous token's hash is not carried over: it matters only within the 5-minute overlap.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("app_tokens") as batch:
        batch.add_column(sa.Column("previous_sha256", sa.String(64)))
        batch.add_column(sa.Column("last_success_at", sa.Double))
        batch.add_column(sa.Column("force_blocked_until", sa.Double))
        batch.add_column(sa.Column("dead_at", sa.Double))
        batch.add_column(sa.Column("early_deaths", sa.JSON))
        batch.add_column(sa.Column("unverified_refreshes", sa.JSON))
        batch.add_column(sa.Column("failures", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("retry_at", sa.Double))
        batch.add_column(sa.Column("revision", sa.Integer, nullable=False, server_default="0"))
        batch.drop_column("previous_token")
    op.execute("UPDATE app_tokens SET last_success_at = fetched_at")


def downgrade() -> None:
    with op.batch_alter_table("app_tokens") as batch:
        batch.add_column(sa.Column("previous_token", sa.String(2048)))
        for column in (
            "revision",
            "retry_at",
            "failures",
            "unverified_refreshes",
            "early_deaths",
            "dead_at",
            "force_blocked_until",
            "last_success_at",
            "previous_sha256",
        ):
            batch.drop_column(column)
