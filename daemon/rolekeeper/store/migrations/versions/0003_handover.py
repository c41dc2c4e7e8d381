"""handover: notice outbox states, step details

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("transitions") as batch:
        batch.add_column(sa.Column("finished_at", TIMESTAMP, nullable=True))
    with op.batch_alter_table("transition_steps") as batch:
        batch.add_column(sa.Column("detail", sa.JSON(), nullable=True))
    with op.batch_alter_table("notices") as batch:
        batch.add_column(sa.Column("role_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("recipient", sa.String(length=320), nullable=True))
        batch.add_column(sa.Column("language", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("sending_at", TIMESTAMP, nullable=True))
        batch.add_column(sa.Column("sent_at", TIMESTAMP, nullable=True))
        batch.create_foreign_key(batch.f("fk_notices_role_id_roles"), "roles", ["role_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("notices") as batch:
        batch.drop_constraint(batch.f("fk_notices_role_id_roles"), type_="foreignkey")
        for column in ("sent_at", "sending_at", "language", "recipient", "role_id"):
            batch.drop_column(column)
    with op.batch_alter_table("transition_steps") as batch:
        batch.drop_column("detail")
    with op.batch_alter_table("transitions") as batch:
        batch.drop_column("finished_at")
