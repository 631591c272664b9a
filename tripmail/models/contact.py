from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tripmail.models.base import Base


class Contact(Base):
    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("workspace_id", "email"),
        Index("ix_contacts_workspace_phone", "workspace_id", "phone"),
        Index("ix_contacts_workspace_external_id", "workspace_id", "external_id"),
        Index("ix_contacts_workspace_email_md5", "workspace_id", "email_md5"),
        Index("ix_contacts_workspace_email_xxh", "workspace_id", "email_xxh"),
        # Audience pages walk this in order from their cursor instead of sorting the workspace for every page.
        Index("ix_contacts_workspace_id", "workspace_id", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    email: Mapped[str | None] = mapped_column(String(320))
    # Stored so that a link naming the contact by a hash of its email is an index lookup, not a scan.
    email_md5: Mapped[str | None] = mapped_column(String(32))
    email_xxh: Mapped[str | None] = mapped_column(String(16))
    phone: Mapped[str | None] = mapped_column(String(32))
    external_id: Mapped[str | None] = mapped_column(String(300))
    fields: Mapped[dict[str, Any]]
    consents: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
