"""SendGrid's Event Webhook: a JSON array of events per POST.

Each event carries `smtp-id`, the Message-ID of the message as sent, which SendGrid keeps when the message has
one. With the Signed Event Webhook's verification key configured, its signature must verify (signatures.py).
"""

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from tripmail.bounces.reports import Report, bracketed_message_id
from tripmail.errors import InvalidRequest

REPORTER = "SendGrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
# Why SendGrid dropped a message without sending it, when the reason is one about the address itself.
DROPPED_PERMANENT = frozenset({"Bounced Address", "Invalid"})
DROPPED_COMPLAINT = "Spam Reporting Address"


class SendgridEvent(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    event: str
    email: str | None = None
    smtp_id: str | None = Field(default=None, alias="smtp-id")
    sg_event_id: str | None = None
    # On a bounce event: `bounce` (the server refused the address) or `blocked` (it refused the message for now).
    type: str | None = None
    reason: str | None = None
    status: str | None = None
    response: str | None = None


SendgridEvents = TypeAdapter(list[SendgridEvent])


def _classify(event: SendgridEvent) -> tuple[bool, bool, bool]:
    """(complaint, permanent, temporary)."""
    if event.event == "spamreport":
        return True, False, False
    if event.event == "bounce":
        blocked = event.type == "blocked"
        return False, not blocked, blocked
    if event.event == "deferred":
        return False, False, True
    if event.event == "dropped":
        return event.reason == DROPPED_COMPLAINT, event.reason in DROPPED_PERMANENT, False
    return False, False, False


def to_report(event: SendgridEvent, index: int) -> Report | None:
    """spamreport complains; a bounce of type `bounce` fails the address for good, `blocked` and `deferred` for
    now; `dropped` because the address bounced before or is invalid fails it for good, because it reported spam
    complains; any other event (processed, delivered, open...) is None."""
    complaint, permanent, temporary = _classify(event)
    if not (complaint or permanent or temporary):
        return None
    if not event.email:
        raise InvalidRequest(f"{index}.email: a {event.event} event names its recipient", field=f"{index}.email")
    address = event.email.lower()
    said = " ".join((event.reason or event.response or event.status or "").split())
    # A server's reply stays first, where its code is read from; SendGrid's own reasons say which event gave them.
    diagnostic = said if said[:1].isdigit() else f"{event.event}: {said or 'no reason given'}"
    return Report(
        complaint=complaint,
        permanent=frozenset({address}) if permanent else frozenset(),
        temporary=frozenset({address}) if temporary else frozenset(),
        return_paths=(),
        original_message_ids=(bracketed_message_id(event.smtp_id),) if event.smtp_id else (),
        reporter=REPORTER,
        report_id=event.sg_event_id,
        diagnostics={address: diagnostic},
        feedback_type="spam report" if complaint else None,
    )
