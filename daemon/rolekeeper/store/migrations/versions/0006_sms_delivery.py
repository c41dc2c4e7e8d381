"""SMS notices follow their delivery: the Message SID and when Twilio accepted it

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("notices") as batch:
        batch.add_column(sa.Column("accepted_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("sms_sid", sa.String(length=34), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notices") as batch:
        batch.drop_column("sms_sid")
        batch.drop_column("accepted_at")
