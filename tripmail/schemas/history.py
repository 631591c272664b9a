"""What the event history answers (esputnik's "Event history"): events, and for one event all it led to."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class EventSummary(BaseModel):
    id: str
    name: str
    key: str | None
    status: str
    contact_id: str | None
    matched_automations: int
    received_at: datetime
    processed_at: datetime | None
    error: str | None


class EventPage(BaseModel):
    events: list[EventSummary]
    # Pass as `before` for the next (older) page; None on the last page.
    next_before: str | None


class RunView(BaseModel):
    automation_id: int
    automation: str
    contact_id: str
    status: str
    position: int | None
    wake_at: datetime | None
    error: str | None
    steps: list[dict[str, Any]]


class AttemptView(BaseModel):
    attempted_at: datetime
    outcome: str
    smtp_code: int | None
    smtp_reply: str | None


class MessageView(BaseModel):
    id: int
    automation_id: int
    automation: str
    step_id: int
    template: str
    contact_id: str
    to: str
    status: str
    message_id_header: str | None
    smtp_code: int | None
    smtp_reply: str | None
    sent_at: datetime | None
    attempts: list[AttemptView]


class WebhookView(BaseModel):
    id: int
    automation_id: int
    step_id: int
    url: str
    status: str
    attempts: int
    last_code: int | None
    last_error: str | None


class EventDetail(EventSummary):
    body: dict[str, Any]
    automations: dict[int, str]
    runs: list[RunView]
    messages: list[MessageView]
    webhooks: list[WebhookView]
