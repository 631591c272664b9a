from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tripmail.models.base import Base


class EventStatus(StrEnum):
    # Recorded; its audience is being planned chunk by chunk from `fanout_cursor` on.
    FANNING_OUT = "fanning_out"
    PROCESSED = "processed"
    # Same (workspace, event type, key) inside the dedupe window; caught here when Redis lost the claim.
    DUPLICATE = "duplicate"
    FAILED = "failed"


class EventType(Base):
    __tablename__ = "event_types"
    __table_args__ = (
        UniqueConstraint("workspace_id", "key_normalized"),
        UniqueConstraint("workspace_id", "uuid"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(100))
    # Stored rather than computed with lower(): SQLite's lower() folds ASCII only.
    key_normalized: Mapped[str] = mapped_column(String(100))
    name: Mapped[str] = mapped_column(String(200))
    uuid: Mapped[str] = mapped_column(String(36))
    params: Mapped[dict[str, Any]]
    dedupe_window_s: Mapped[int]
    created_at: Mapped[datetime]


class Event(Base):
    """Every accepted event, recorded by the worker under the id the api answered with."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_workspace_received", "workspace_id", "received_at"),
        Index("ix_events_workspace_type_key", "workspace_id", "event_type_id", "key"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    event_type_id: Mapped[int | None] = mapped_column(ForeignKey("event_types.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(100))
    key: Mapped[str | None] = mapped_column(String(300))
    contact_id: Mapped[str | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    status: Mapped[str] = mapped_column(String(20))
    matched_automations: Mapped[int] = mapped_column(default=0)
    # The last contact id planned; a redelivered task resumes after it.
    fanout_cursor: Mapped[str | None] = mapped_column(String(100))
    error: Mapped[str | None]
    request: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]
    processed_at: Mapped[datetime | None]
