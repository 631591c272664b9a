"""workspace unsubscribe secret: signs the one-click unsubscribe links of the workspace's marketing mail

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-26 13:00:00.000000
"""

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("workspaces", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unsubscribe_secret", sa.String(length=64), nullable=True))
    connection = op.get_bind()
    workspaces = sa.table("workspaces", sa.column("id"), sa.column("unsubscribe_secret"))
    for (workspace_id,) in connection.execute(sa.select(workspaces.c.id)):
        connection.execute(
            workspaces.update().where(workspaces.c.id == workspace_id).values(unsubscribe_secret=secrets.token_hex(32))
        )
    with op.batch_alter_table("workspaces", schema=None) as batch_op:
        batch_op.alter_column("unsubscribe_secret", existing_type=sa.String(length=64), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("workspaces", schema=None) as batch_op:
        batch_op.drop_column("unsubscribe_secret")
