"""The providers' documented webhook payloads (tests/data/provider_webhooks, see its README), addressed to the
message a test sent."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAYLOADS_DIR = Path(__file__).parent.parent / "data" / "provider_webhooks"


def payload(path: str) -> Any:
    """A documented payload as it is."""
    return json.loads((PAYLOADS_DIR / path).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Documented:
    """A documented payload, and the recipient and Message-ID in it that a test puts its own in place of."""

    path: str
    recipient: str
    # As the payload writes it; Mailgun's are without angle brackets.
    message_id: str | None = None

    def adapted(self, *, recipient: str, message_id: str | None = None) -> Any:
        """The payload with the test's recipient and Message-ID (`<...>`, as Tripmail writes it) everywhere the
        documented ones occur."""
        text = (PAYLOADS_DIR / self.path).read_text(encoding="utf-8")
        replacements = {self.recipient: recipient}
        if message_id is not None:
            assert self.message_id is not None, f"{self.path} carries no Message-ID"
            bare = not self.message_id.startswith("<")
            replacements[self.message_id] = message_id.strip("<>") if bare else message_id
        for original, replacement in replacements.items():
            assert original in text, f"{original} is not in {self.path}"
            text = text.replace(original, replacement)
        return json.loads(text)


SES_MESSAGE_ID = "custom-message-ID"
SES_BOUNCE = Documented("ses/bounce_permanent.json", "jane@example.com", SES_MESSAGE_ID)
SES_TRANSIENT = Documented("ses/bounce_transient.json", "jane@example.com", SES_MESSAGE_ID)
SES_COMPLAINT = Documented("ses/complaint.json", "richard@example.com", SES_MESSAGE_ID)
SES_DELIVERY = Documented("ses/delivery.json", "jane@example.com", SES_MESSAGE_ID)
POSTMARK_HARD = Documented("postmark/bounce_hard.json", "john@example.com")
POSTMARK_SOFT = Documented("postmark/bounce_soft.json", "john@example.com")
POSTMARK_COMPLAINT = Documented("postmark/spam_complaint.json", "john@example.com")
POSTMARK_DELIVERY = Documented("postmark/delivery.json", "john@example.com")
MAILGUN_MESSAGE_ID = "20130503192659.13651.20287@sandbox.mailgun.org"
MAILGUN_PERMANENT = Documented("mailgun/failed_permanent.json", "alice@example.com", MAILGUN_MESSAGE_ID)
MAILGUN_TEMPORARY = Documented("mailgun/failed_temporary.json", "alice@example.com", MAILGUN_MESSAGE_ID)
MAILGUN_COMPLAINED = Documented("mailgun/complained.json", "alice@example.com", MAILGUN_MESSAGE_ID)
MAILGUN_DELIVERED = Documented("mailgun/delivered.json", "alice@example.com", MAILGUN_MESSAGE_ID)
SENDGRID_EVENTS = Documented("sendgrid/events.json", "example@test.com", "<14c5d75ce93.dfd.64b469@ismtpd-555>")


def sns_notification(notification: Any) -> Any:
    """SNS's documented Notification, carrying an SES notification as its Message."""
    return payload("ses/sns_notification.json") | {"Message": json.dumps(notification)}


def with_content(record: Any, content: bytes) -> Any:
    """A Postmark record with the raw bounce or abuse report in Content ("Include bounce content" on)."""
    return record | {"Content": content.decode("latin-1")}


def sendgrid_events(events: list[str], *, recipient: str, message_id: str) -> list[Any]:
    """The documented SendGrid events of these kinds (`bounce`, `blocked` for a bounce of type blocked...)."""
    documented = SENDGRID_EVENTS.adapted(recipient=recipient, message_id=message_id)
    by_kind = {"blocked" if event.get("type") == "blocked" else event["event"]: event for event in documented}
    return [by_kind[kind] for kind in events]
