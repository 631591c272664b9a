from datetime import datetime

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tripmail.models.base import Base


class WebhookEndpoint(Base):
    """A URL of the workspace's that is told when its messages are sent, fail, bounce or are suppressed.

    The secret signs each POST (Standard Webhooks); it is kept as it is because signing needs it, and shown once.
    """

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    # The delivery event types it receives (`message.sent`, ...).
    event_types: Mapped[list[str]]
    secret: Mapped[str] = mapped_column(String(100))
    enabled: Mapped[bool]
    created_at: Mapped[datetime]
