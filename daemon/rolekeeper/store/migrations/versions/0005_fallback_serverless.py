"""fallback TwiML on Twilio Serverless: the environment and the deployed assets

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fallback_environments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("service_name", sa.String(length=50), nullable=False),
        sa.Column("environment", sa.String(length=100), nullable=False),
        sa.Column("service_sid", sa.String(length=34), nullable=False),
        sa.Column("environment_sid", sa.String(length=34), nullable=False),
        sa.Column("domain_name", sa.String(length=255), nullable=False),
        sa.Column("build_sid", sa.String(length=34), nullable=True),
        sa.Column("deployed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fallback_environments")),
        sa.UniqueConstraint(
            "service_name", "environment", name=op.f("uq_fallback_environments_service_name")
        ),
    )
    op.create_table(
        "fallback_assets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("service_sid", sa.String(length=34), nullable=False),
        sa.Column("path", sa.String(length=255), nullable=False),
        sa.Column("asset_sid", sa.String(length=34), nullable=False),
        sa.Column("version_sid", sa.String(length=34), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("deployed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_fallback_assets")),
        sa.UniqueConstraint("service_sid", "path", name=op.f("uq_fallback_assets_service_sid")),
    )


def downgrade() -> None:
    op.drop_table("fallback_assets")
    op.drop_table("fallback_environments")
