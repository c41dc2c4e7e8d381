"""mail watch and detection

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unreadable_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=320), nullable=False),
        sa.Column("folder", sa.String(length=255), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unreadable_messages")),
        sa.UniqueConstraint(
            "source", "folder", "uidvalidity", "uid", name=op.f("uq_unreadable_messages_source")
        ),
    )
    op.create_table(
        "candidates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("domain", sa.String(length=253), nullable=False),
        sa.Column("role_id", sa.Integer(), nullable=True),
        sa.Column("person_id", sa.Integer(), nullable=True),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["person_id"], ["people.id"], name=op.f("fk_candidates_person_id_people")
        ),
        sa.ForeignKeyConstraint(
            ["role_id"], ["roles.id"], name=op.f("fk_candidates_role_id_roles")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_candidates")),
        sa.UniqueConstraint("address", name=op.f("uq_candidates_address")),
    )
    with op.batch_alter_table("candidates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_candidates_domain"), ["domain"], unique=False)

    op.create_table(
        "client_arrivals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("message_key", sa.String(length=255), nullable=False),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_client_arrivals_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_client_arrivals")),
        sa.UniqueConstraint("client_id", "message_key", name=op.f("uq_client_arrivals_client_id")),
    )
    with op.batch_alter_table("client_arrivals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_client_arrivals_arrived_at"), ["arrived_at"], unique=False
        )

    op.create_table(
        "learned_numbers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=32), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_learned_numbers_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_learned_numbers")),
        sa.UniqueConstraint("client_id", "number", name=op.f("uq_learned_numbers_client_id")),
    )
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("live", sa.Boolean(), server_default=sa.text("(true)"), nullable=False)
        )
        batch_op.add_column(
            sa.Column("source", sa.String(length=400), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("message_date", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("planned_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("digested_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("client_address", sa.String(length=320), nullable=True))

    op.create_table(
        "nudges",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=320), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("message_id", sa.String(length=255), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
            name=op.f("fk_nudges_client_id_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"],
            ["incidents.id"],
            name=op.f("fk_nudges_incident_id_incidents"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nudges")),
        sa.UniqueConstraint("message_id", name=op.f("uq_nudges_message_id")),
    )
    with op.batch_alter_table("nudges", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_nudges_client_id"), ["client_id"], unique=False)


def downgrade() -> None:
    op.drop_table("nudges")
    with op.batch_alter_table("incidents", schema=None) as batch_op:
        batch_op.drop_column("client_address")
        batch_op.drop_column("digested_at")
        batch_op.drop_column("planned_at")
        batch_op.drop_column("message_date")
        batch_op.drop_column("source")
        batch_op.drop_column("live")

    op.drop_table("learned_numbers")
    with op.batch_alter_table("client_arrivals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_client_arrivals_arrived_at"))

    op.drop_table("client_arrivals")
    with op.batch_alter_table("candidates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_candidates_domain"))

    op.drop_table("candidates")
    op.drop_table("unreadable_messages")
