"""durable send retries: when a message that failed transiently is due again, when its retries end, and when the
scheduler last handed it out; where each suppression came from

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 07:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from tripmail.models.base import UTCDateTime

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("next_attempt_at", UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("give_up_at", UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("enqueued_at", UTCDateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_messages_due", ["status", "next_attempt_at"], unique=False)
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("source", sa.String(length=40), nullable=False, server_default="smtp"))


def downgrade() -> None:
    with op.batch_alter_table("suppressions", schema=None) as batch_op:
        batch_op.drop_column("source")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_due")
        batch_op.drop_column("enqueued_at")
        batch_op.drop_column("give_up_at")
        batch_op.drop_column("next_attempt_at")
