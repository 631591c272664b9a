"""message relays: which of the configured SMTP relays took each message, and each attempt

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("relay", sa.String(length=255), nullable=True))
    with op.batch_alter_table("message_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("relay", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("message_attempts", schema=None) as batch_op:
        batch_op.drop_column("relay")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_column("relay")
