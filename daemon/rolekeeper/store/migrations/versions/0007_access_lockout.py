"""the access number's PIN lockout: refused PINs by caller and call

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "access_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("caller", sa.String(length=64), nullable=False),
        sa.Column("call_sid", sa.String(length=64), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("locked_until", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_failures")),
    )
    with op.batch_alter_table("access_failures") as batch:
        batch.create_index(batch.f("ix_access_failures_at"), ["at"], unique=False)
        batch.create_index(batch.f("ix_access_failures_call_sid"), ["call_sid"], unique=False)
        batch.create_index(batch.f("ix_access_failures_caller"), ["caller"], unique=False)


def downgrade() -> None:
    op.drop_table("access_failures")
