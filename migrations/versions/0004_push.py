"""WeChat message push: the outbox (push_messages, push_deliveries, push_targets) and the
subscribe-grant ledger (subscription_grants).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "push_messages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("appid", sa.String(64), nullable=False),
        sa.Column("dedupe_key", sa.String(256), nullable=False),
        sa.Column("event_id", sa.String(32), nullable=False, unique=True),
        sa.Column("received_at", sa.Double, nullable=False),
        sa.Column("msg_type", sa.String(64)),
        sa.Column("event", sa.String(64)),
        sa.Column("body", sa.Text, nullable=False),
        sa.UniqueConstraint("appid", "dedupe_key", name="uq_push_messages_dedupe"),
    )
    op.create_index("ix_push_messages_appid_received_at", "push_messages", ["appid", "received_at"])
    op.create_table(
        "push_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "push_id",
            sa.Integer,
            sa.ForeignKey("push_messages.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("appid", sa.String(64), nullable=False),
        sa.Column("target", sa.String(2048), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Double, nullable=False),
        sa.Column("next_attempt_at", sa.Double, nullable=False),
        sa.Column("leased_until", sa.Double),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_attempt_at", sa.Double),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.String(512)),
        sa.Column("last_error_at", sa.Double),
        sa.Column("delivered_at", sa.Double),
    )
    op.create_index("ix_push_deliveries_push_id", "push_deliveries", ["push_id"])
    op.create_index("ix_push_deliveries_appid_status", "push_deliveries", ["appid", "status"])
    op.create_index("ix_push_deliveries_due", "push_deliveries", ["status", "next_attempt_at"])
    op.create_table(
        "push_targets",
        sa.Column("appid", sa.String(64), primary_key=True),
        sa.Column("target_sha256", sa.String(64), primary_key=True),
        sa.Column("target", sa.String(2048), nullable=False),
        sa.Column("last_delivered_at", sa.Double),
        sa.Column("last_error_at", sa.Double),
        sa.Column("last_status", sa.Integer),
        sa.Column("last_error", sa.String(512)),
        sa.Column("last_error_attempts", sa.Integer),
    )
    op.create_table(
        "subscription_grants",
        sa.Column("appid", sa.String(64), primary_key=True),
        sa.Column("openid", sa.String(128), primary_key=True),
        sa.Column("template_id", sa.String(128), primary_key=True),
        sa.Column("one_time_grants", sa.Integer, nullable=False, server_default="0"),
        sa.Column("accepted_total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("used_total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("long_term_status", sa.String(16)),
        sa.Column("last_status", sa.String(16)),
        sa.Column("last_event", sa.String(64)),
        sa.Column("last_change_at", sa.Double, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("subscription_grants")
    op.drop_table("push_targets")
    op.drop_table("push_deliveries")
    op.drop_table("push_messages")
