from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tripmail.models.base import Base


class RunStatus(StrEnum):
    # At a wait step until `wake_at`; the scheduler then hands it to a worker, which carries it on.
    WAITING = "waiting"
    # Taken out of waiting by the transaction that carries it on; never committed (that transaction ends it in
    # another status), so a second hand-over of the run finds it not waiting.
    RUNNING = "running"
    COMPLETED = "completed"
    # A step could not be carried out (a condition that cannot be decided, a field value refused): `error` says why.
    FAILED = "failed"


class AutomationRun(Base):
    """An automation with more than send_email steps, carried out for one contact and one event.

    An automation of send_email steps alone has no run row: its messages, one per step, are its whole state.
    """

    __tablename__ = "automation_runs"
    __table_args__ = (
        UniqueConstraint("event_id", "automation_id", "contact_id"),
        Index("ix_automation_runs_due", "status", "wake_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    automation_id: Mapped[int] = mapped_column(ForeignKey("automations.id", ondelete="CASCADE"))
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20))
    # The program position to carry out next, None once the run has ended (on a failure: the step that failed).
    position: Mapped[int | None]
    # The positions carried out, in order, with what each did: the run's history.
    trail: Mapped[list[Any]]
    error: Mapped[str | None] = mapped_column(Text)
    wake_at: Mapped[datetime | None]
    # When the scheduler last handed the waiting run to a worker: it hands it again only once that is stale.
    enqueued_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class WebhookStatus(StrEnum):
    PENDING = "pending"
    # Claimed by a worker that is posting it now.
    POSTING = "posting"
    SENT = "sent"
    FAILED = "failed"


class WebhookDelivery(Base):
    """One POST, retried with backoff until the receiver answers 2xx or refuses it: of a run's webhook step (event,
    automation, step and contact set), or of a delivery event to a workspace's endpoint (endpoint and webhook_id set).
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "step_id", "contact_id"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    event_id: Mapped[str | None] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    automation_id: Mapped[int | None] = mapped_column(ForeignKey("automations.id", ondelete="CASCADE"))
    step_id: Mapped[int | None] = mapped_column(ForeignKey("automation_steps.id", ondelete="CASCADE"))
    contact_id: Mapped[str | None] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    # Removing an endpoint drops what it had still to receive.
    endpoint_id: Mapped[int | None] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"), index=True)
    # A delivery event's `webhook-id` header: the same on every attempt, so a receiver can drop a repeat.
    webhook_id: Mapped[str | None] = mapped_column(String(40))
    url: Mapped[str] = mapped_column(Text)
    # The JSON body, exactly as posted (and signed) on every attempt.
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int]
    next_attempt_at: Mapped[datetime]
    # When the scheduler last handed it to a worker, or the worker claimed it (see queue.HAND_OUT_AGAIN_AFTER).
    enqueued_at: Mapped[datetime | None]
    last_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
