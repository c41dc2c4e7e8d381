"""telephony: role numbers on Twilio

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "twilio_numbers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.Column("sid", sa.String(length=34), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("adopted", sa.Boolean(), nullable=False),
        sa.Column("provisioned_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["role_id"], ["roles.id"], name=op.f("fk_twilio_numbers_role_id_roles")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_twilio_numbers")),
        sa.UniqueConstraint("number", name=op.f("uq_twilio_numbers_number")),
        sa.UniqueConstraint("role_id", name=op.f("uq_twilio_numbers_role_id")),
        sa.UniqueConstraint("sid", name=op.f("uq_twilio_numbers_sid")),
    )


def downgrade() -> None:
    op.drop_table("twilio_numbers")
