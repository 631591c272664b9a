"""message claims: the run holding a claim, and when the message was handed to the SMTP server

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 12:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import tripmail.models.base

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("handed_over_at", tripmail.models.base.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_messages_claimed_by", ["claimed_by"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_claimed_by")
        batch_op.drop_column("handed_over_at")
        batch_op.drop_column("claimed_by")
