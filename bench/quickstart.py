"""What every delivery measurement sends: the quickstart's password-reset email, one per distinct recipient.

Tripmail gets it as events (the apply file examples/quickstart.yaml); the raw loop and the naive Celery app get the
same template, sender and data, so the three send the same message to the same kind of recipient.
"""

import json
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any

from tripmail.setup.spec import load_apply_file

REPOSITORY = Path(__file__).resolve().parent.parent
APPLY_FILE = REPOSITORY / "examples" / "quickstart.yaml"
EVENT = "FORGOT_PASSWORD"
FIRST_NAME = "Ann"


@dataclass(frozen=True)
class QuickstartEmail:
    workspace: str
    sender: str
    subject: str
    html: str | None
    text: str | None

    @property
    def envelope_sender(self) -> str:
        return parseaddr(self.sender)[1]


@lru_cache
def quickstart_email() -> QuickstartEmail:
    spec = load_apply_file(APPLY_FILE)
    [template] = spec.templates
    assert spec.from_address is not None, "the quickstart names its sender"
    return QuickstartEmail(spec.workspace, spec.from_address, template.subject, template.html, template.text)


def stdlib_message(
    *, sender: str, to: str, subject: str, text: str, html: str, date: str, message_id: str
) -> EmailMessage:
    """The message as most apps build it: the stdlib `email` package, its default policy, text + HTML."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = date
    message["Message-ID"] = message_id
    message.set_content(text)
    message.add_alternative(html, subtype="html")
    return message


def recipient(index: int, domain: str) -> str:
    return f"user{index}@{domain}"


def reset_link(index: int) -> str:
    return f"https://app.example/reset/{index:08d}"


def event_body(index: int, domain: str, *, key_prefix: str) -> dict[str, Any]:
    """One native event, like the README's curl, with a key and a contact of its own."""
    return {
        "event": EVENT,
        "key": f"{key_prefix}-{index}",
        "contact": {"email": recipient(index, domain), "fields": {"first_name": FIRST_NAME}},
        "data": {"forgot_password_link": reset_link(index)},
    }


def batch_bodies(count: int, batch_size: int, domain: str, *, key_prefix: str) -> list[bytes]:
    """`POST /v1/events/batch` bodies for `count` events, serialised up front so the client costs little."""
    return [
        json.dumps(
            {
                "events": [
                    event_body(index, domain, key_prefix=key_prefix)
                    for index in range(start, min(start + batch_size, count))
                ]
            }
        ).encode()
        for start in range(0, count, batch_size)
    ]
