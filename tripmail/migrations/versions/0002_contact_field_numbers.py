"""contact field numbers

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 17:28:03.772846
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("contact_fields", schema=None) as batch_op:
        batch_op.add_column(sa.Column("number", sa.Integer(), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_contact_fields_workspace_id_number"), ["workspace_id", "number"]
        )


def downgrade() -> None:
    with op.batch_alter_table("contact_fields", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_contact_fields_workspace_id_number"), type_="unique")
        batch_op.drop_column("number")
