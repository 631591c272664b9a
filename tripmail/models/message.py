from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tripmail.models.base import Base


class MessageStatus(StrEnum):
    PENDING = "pending"
    # Claimed by a worker that is talking to the SMTP server right now.
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    # Not sent: the address is on the workspace's suppression list (an earlier hard bounce).
    SUPPRESSED = "suppressed"
    # The connection broke after the message was handed over: the server may have accepted it. Never resent
    # automatically, because resending risks the double send that an email service must not make.
    UNKNOWN = "unknown"
    # Accepted by the relay, then reported undeliverable for good by a later delivery status notification.
    BOUNCED = "bounced"
    # Delivered, and reported as spam by its recipient (an ARF feedback report).
    COMPLAINED = "complained"


class Message(Base):
    """One email to one contact from one automation step for one event.

    The unique (event, automation, step, contact) key is what makes a redelivered task unable to send twice.
    """

    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("event_id", "automation_id", "step_id", "contact_id"),
        Index("ix_messages_workspace_status", "workspace_id", "status"),
        # A run that starts again settles what its earlier try left claimed.
        Index("ix_messages_claimed_by", "claimed_by"),
        # The scheduler's look for pending messages whose next try is due.
        Index("ix_messages_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    automation_id: Mapped[int] = mapped_column(ForeignKey("automations.id", ondelete="CASCADE"))
    step_id: Mapped[int] = mapped_column(ForeignKey("automation_steps.id", ondelete="CASCADE"))
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    template_id: Mapped[int] = mapped_column(ForeignKey("templates.id", ondelete="CASCADE"))
    to_address: Mapped[str] = mapped_column(String(320))
    status: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(default=0)
    # The delivery task run (its Celery task id, kept across retries and redelivery) that holds the claim.
    claimed_by: Mapped[str | None] = mapped_column(String(64))
    # Committed before the message's DATA is sent: a claim that ended without a result is resendable only
    # when this is empty; otherwise the server may have the message and its fate is unknown.
    handed_over_at: Mapped[datetime | None]
    message_id_header: Mapped[str | None] = mapped_column(String(300))
    # The relay (host:port, or its name) that gave the last reply: the one that took the message, once sent.
    relay: Mapped[str | None] = mapped_column(String(255))
    smtp_code: Mapped[int | None]
    smtp_reply: Mapped[str | None] = mapped_column(Text)
    # After a transient failure (a 4xx, a relay that is down): when the scheduler hands the message out again, and
    # the time after which a transient failure fails it for good (set at its first one, cleared by a resend).
    next_attempt_at: Mapped[datetime | None]
    give_up_at: Mapped[datetime | None]
    # When the scheduler last handed it to a worker: not handed out again while that is recent.
    enqueued_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class MessageAttempt(Base):
    """One try at sending a message, with what the SMTP server said."""

    __tablename__ = "message_attempts"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"), index=True)
    attempted_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(String(20))
    relay: Mapped[str | None] = mapped_column(String(255))
    smtp_code: Mapped[int | None]
    smtp_reply: Mapped[str | None] = mapped_column(Text)


class SuppressionSource(StrEnum):
    # A permanent refusal of the recipient by the SMTP server during the send.
    SMTP = "smtp"
    # Added by an operator (`tripmail suppressions add`, POST /v1/suppressions).
    MANUAL = "manual"
    # A delivery status notification that came back after the relay had accepted the message (`tripmail bounces`).
    BOUNCE = "bounce"
    # The recipient reported the mail as spam (an ARF feedback report, `tripmail bounces`).
    COMPLAINT = "complaint"


class Suppression(Base):
    """An address the workspace no longer mails: it bounced permanently, or an operator said so."""

    __tablename__ = "suppressions"
    __table_args__ = (UniqueConstraint("workspace_id", "email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    workspace_id: Mapped[int] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(40), default=SuppressionSource.SMTP, server_default="smtp")
    created_at: Mapped[datetime]
