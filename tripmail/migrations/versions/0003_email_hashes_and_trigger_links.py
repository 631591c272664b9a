"""email hashes and trigger links

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 17:35:08.520128
"""

import hashlib
import secrets
from collections.abc import Sequence

import sqlalchemy as sa
import xxhash
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("automations", schema=None) as batch_op:
        batch_op.add_column(sa.Column("link", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(batch_op.f("uq_automations_link"), ["link"])

    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_md5", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("email_xxh", sa.String(length=16), nullable=True))
        batch_op.create_index("ix_contacts_workspace_email_md5", ["workspace_id", "email_md5"], unique=False)
        batch_op.create_index("ix_contacts_workspace_email_xxh", ["workspace_id", "email_xxh"], unique=False)

    # Rows that exist already get what new rows get on insert; the hashes are frozen here as they are today.
    connection = op.get_bind()
    contacts = sa.table("contacts", sa.column("id"), sa.column("email"), sa.column("email_md5"), sa.column("email_xxh"))
    for contact_id, email in connection.execute(
        sa.select(contacts.c.id, contacts.c.email).where(contacts.c.email.is_not(None))
    ):
        connection.execute(
            contacts.update()
            .where(contacts.c.id == contact_id)
            .values(
                email_md5=hashlib.md5(email.encode(), usedforsecurity=False).hexdigest(),
                email_xxh=xxhash.xxh64_hexdigest(email.encode()),
            )
        )
    automations = sa.table("automations", sa.column("id"), sa.column("link"))
    for (automation_id,) in connection.execute(sa.select(automations.c.id)):
        connection.execute(
            automations.update().where(automations.c.id == automation_id).values(link=secrets.token_hex(24))
        )


def downgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index("ix_contacts_workspace_email_xxh")
        batch_op.drop_index("ix_contacts_workspace_email_md5")
        batch_op.drop_column("email_xxh")
        batch_op.drop_column("email_md5")

    with op.batch_alter_table("automations", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_automations_link"), type_="unique")
        batch_op.drop_column("link")
