"""action mails (alerts, digests, nudges) recorded before they are sent

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "action_mails",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("sent_mailbox", sa.String(length=320), nullable=True),
        sa.Column("incidents", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sending_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_action_mails")),
        sa.UniqueConstraint("message_id", name=op.f("uq_action_mails_message_id")),
    )
    with op.batch_alter_table("action_mails", schema=None) as batch_op:
        batch_op.create_index("ix_action_mails_open", ["kind", "subject", "status"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_action_mails_created_at"), ["created_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("action_mails")
