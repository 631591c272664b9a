"""Mailgun's webhooks (`{"signature": {...}, "event-data": {...}}`, one event per POST).

Mailgun keeps the Message-ID the message was sent with and echoes it, without its angle brackets, as
`event-data.message.headers.message-id`. With a webhook signing key configured, the signature in the body must
verify (signatures.py).
"""

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from tripmail.bounces.reports import Report, bracketed_message_id
from tripmail.errors import InvalidRequest

REPORTER = "Mailgun"


class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class MailgunSignature(_Wire):
    timestamp: str | int
    token: str
    signature: str


class MailgunDeliveryStatus(_Wire):
    code: int | str | None = None
    message: str = ""
    description: str = ""


class MailgunMessage(_Wire):
    headers: dict[str, JsonValue] = Field(default_factory=dict)


class MailgunEnvelope(_Wire):
    sender: str | None = None


class MailgunEventData(_Wire):
    event: str
    id: str | None = None
    recipient: str | None = None
    severity: str | None = None
    reason: str | None = None
    delivery_status: MailgunDeliveryStatus | None = Field(default=None, alias="delivery-status")
    message: MailgunMessage | None = None
    envelope: MailgunEnvelope | None = None


class MailgunWebhook(_Wire):
    signature: MailgunSignature | None = None
    event_data: MailgunEventData = Field(alias="event-data")


def _diagnostic(data: MailgunEventData) -> str:
    status = data.delivery_status
    parts = [str(status.code) if status and status.code else "", status.message or status.description if status else ""]
    text = " ".join(" ".join(parts).split())
    return text or f"failed ({data.reason or 'no reason given'})"


def to_report(webhook: MailgunWebhook) -> Report | None:
    """`failed` with severity permanent fails the recipient for good, with another severity for now; `complained`
    complains; any other event (delivered, opened, accepted...) is None."""
    data = webhook.event_data
    if data.event not in ("failed", "complained"):
        return None
    if not data.recipient:
        raise InvalidRequest(
            f"event-data.recipient: a {data.event} event names its recipient", field="event-data.recipient"
        )
    address = data.recipient.lower()
    headers = data.message.headers if data.message else {}
    message_id = headers.get("message-id") or headers.get("Message-Id")
    failed = data.event == "failed"
    permanent = failed and data.severity == "permanent"
    return Report(
        complaint=not failed,
        permanent=frozenset({address}) if permanent else frozenset(),
        temporary=frozenset({address}) if failed and not permanent else frozenset(),
        return_paths=(data.envelope.sender,) if data.envelope and data.envelope.sender else (),
        original_message_ids=(bracketed_message_id(message_id),) if isinstance(message_id, str) else (),
        reporter=REPORTER,
        report_id=data.id,
        diagnostics={address: _diagnostic(data)} if failed else {},
        feedback_type=None if failed else "spam complaint",
    )
