"""delivery event webhooks: a workspace's endpoints (url, the event types they receive, a Standard Webhooks secret),
and webhook deliveries that POST a delivery event to one of them rather than carry out an automation's webhook step

A single migration on purpose: it depends on nothing but 0012 and may be renumbered beside other new ones.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02 09:00:00.000000
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

from tripmail.models.base import UTCDateTime

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What an automation's webhook step always sets, and a delivery event to an endpoint leaves empty.
STEP_COLUMNS: list[tuple[str, sa.types.TypeEngine[Any]]] = [
    ("event_id", sa.String(length=36)),
    ("automation_id", sa.Integer()),
    ("step_id", sa.Integer()),
    ("contact_id", sa.String(length=36)),
]


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workspace_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types", sa.JSON(), nullable=False),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_webhook_endpoints_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_endpoints")),
    )
    op.create_index("ix_webhook_endpoints_workspace_id", "webhook_endpoints", ["workspace_id"], unique=False)
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.add_column(sa.Column("endpoint_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("webhook_id", sa.String(length=40), nullable=True))
        for name, type_ in STEP_COLUMNS:
            batch_op.alter_column(name, existing_type=type_, nullable=True)
        batch_op.create_index("ix_webhook_deliveries_endpoint_id", ["endpoint_id"], unique=False)
        batch_op.create_foreign_key(
            "fk_webhook_deliveries_endpoint_id_webhook_endpoints",
            "webhook_endpoints",
            ["endpoint_id"],
            ["id"],
            ondelete="CASCADE",
        )


def downgrade() -> None:
    # Deliveries to endpoints have no step to keep them by.
    op.execute("DELETE FROM webhook_deliveries WHERE endpoint_id IS NOT NULL")
    with op.batch_alter_table("webhook_deliveries", schema=None) as batch_op:
        batch_op.drop_constraint("fk_webhook_deliveries_endpoint_id_webhook_endpoints", type_="foreignkey")
        batch_op.drop_index("ix_webhook_deliveries_endpoint_id")
        for name, type_ in STEP_COLUMNS:
            batch_op.alter_column(name, existing_type=type_, nullable=False)
        batch_op.drop_column("webhook_id")
        batch_op.drop_column("endpoint_id")
    op.drop_index("ix_webhook_endpoints_workspace_id", table_name="webhook_endpoints")
    op.drop_table("webhook_endpoints")
