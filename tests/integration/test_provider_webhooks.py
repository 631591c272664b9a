"""Provider webhooks through the running stack: an event is mailed, the provider's documented payload about it is
POSTed to /v1/bounce-webhooks/<provider> with the message's Message-ID in it, and the message, the suppression
list and the next event show what it said."""

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from tests.support.bounce_samples import COMPLAINT, SENDMAIL
from tests.support.builders import Tenant, make_token, unique_workspace_key
from tests.support.event_posts import post
from tests.support.message_states import message_of_event_settled, message_state
from tests.support.polling import wait_until
from tests.support.provider_payloads import (
    MAILGUN_COMPLAINED,
    MAILGUN_PERMANENT,
    MAILGUN_TEMPORARY,
    POSTMARK_COMPLAINT,
    POSTMARK_HARD,
    POSTMARK_SOFT,
    SES_BOUNCE,
    SES_COMPLAINT,
    SES_DELIVERY,
    SES_TRANSIENT,
    payload,
    sendgrid_events,
    sns_notification,
    with_content,
)
from tests.support.sendgrid_signing import sendgrid_key_pair, sendgrid_signature
from tests.support.smtp_sink import Sink, running_sink
from tests.support.stack import OwnStack
from tripmail.config import Settings
from tripmail.models import Message

MAILGUN_KEY = "key-of-the-tests-mailgun-domain"


def bounce_token(db: sessionmaker[Session], tenant: Tenant) -> str:
    with db.begin() as session:
        return make_token(session, tenant.key, ["bounces:write"])


def webhook(api_url: str, provider: str, token: str, body: Any, **request: Any) -> httpx.Response:
    """POST as the provider does: Postmark and SendGrid with the token as the Basic password written into the
    webhook URL, SNS and Mailgun with it as ?token=; SNS labels its JSON text/plain."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "text/plain; charset=UTF-8" if provider == "ses" else "application/json"}
    headers |= request.pop("headers", {})
    if provider in ("postmark", "sendgrid"):
        request["auth"] = ("tripmail", token)
    else:
        request["params"] = {"token": token}
    return httpx.post(
        f"{api_url}/v1/bounce-webhooks/{provider}", content=content, headers=headers, timeout=30, **request
    )


def mailed(api_url: str, db: sessionmaker[Session], sink: Sink, tenant: Tenant, email: str) -> Message:
    event_id = post(api_url, tenant, email).json()["id"]
    message = wait_until(lambda: message_of_event_settled(db, event_id), timeout=60, what="the message sent")
    assert message.status == "sent" and len(sink.to(email)) == 1
    assert message.message_id_header is not None
    return message


def next_event_is_suppressed(api_url: str, db: sessionmaker[Session], sink: Sink, tenant: Tenant, email: str) -> None:
    event_id = post(api_url, tenant, email).json()["id"]
    later = wait_until(lambda: message_of_event_settled(db, event_id), what="the next message")
    assert (later.status, later.attempts) == ("suppressed", 0)
    assert len(sink.to(email)) == 1  # the first message only


@dataclass(frozen=True)
class Report:
    """A provider's documented payload about one message, and what it does to it."""

    provider: str
    body: Callable[[str, str], Any]  # (recipient, Message-ID) -> the body as the provider posts it
    status: str  # the message's status after it
    source: str | None = None  # the suppression's source after it; None: nothing suppressed


SETTLING = {
    "ses-bounce": Report(
        "ses", lambda to, mid: sns_notification(SES_BOUNCE.adapted(recipient=to, message_id=mid)), "bounced", "bounce"
    ),
    "ses-complaint": Report(
        "ses",
        lambda to, mid: sns_notification(SES_COMPLAINT.adapted(recipient=to, message_id=mid)),
        "complained",
        "complaint",
    ),
    "postmark-hard-bounce": Report(
        "postmark",
        lambda to, mid: with_content(
            POSTMARK_HARD.adapted(recipient=to), SENDMAIL.adapted(recipient=to, message_id=mid)
        ),
        "bounced",
        "bounce",
    ),
    "postmark-spam-complaint": Report(
        "postmark",
        lambda to, mid: with_content(
            POSTMARK_COMPLAINT.adapted(recipient=to), COMPLAINT.adapted(recipient=to, message_id=mid)
        ),
        "complained",
        "complaint",
    ),
    "mailgun-permanent-failure": Report(
        "mailgun", lambda to, mid: MAILGUN_PERMANENT.adapted(recipient=to, message_id=mid), "bounced", "bounce"
    ),
    "mailgun-complained": Report(
        "mailgun", lambda to, mid: MAILGUN_COMPLAINED.adapted(recipient=to, message_id=mid), "complained", "complaint"
    ),
    # A batch as SendGrid posts one: the events before the bounce are accepted and ignored.
    "sendgrid-bounce": Report(
        "sendgrid",
        lambda to, mid: sendgrid_events(["processed", "delivered", "bounce"], recipient=to, message_id=mid),
        "bounced",
        "bounce",
    ),
    "sendgrid-spamreport": Report(
        "sendgrid",
        lambda to, mid: sendgrid_events(["delivered", "open", "spamreport"], recipient=to, message_id=mid),
        "complained",
        "complaint",
    ),
}
SOFT = {
    "ses-transient-bounce": Report(
        "ses", lambda to, mid: sns_notification(SES_TRANSIENT.adapted(recipient=to, message_id=mid)), "sent"
    ),
    "postmark-soft-bounce": Report(
        "postmark",
        lambda to, mid: with_content(
            POSTMARK_SOFT.adapted(recipient=to), SENDMAIL.adapted(recipient=to, message_id=mid)
        ),
        "sent",
    ),
    "mailgun-temporary-failure": Report(
        "mailgun", lambda to, mid: MAILGUN_TEMPORARY.adapted(recipient=to, message_id=mid), "sent"
    ),
    "sendgrid-blocked": Report(
        "sendgrid", lambda to, mid: sendgrid_events(["blocked"], recipient=to, message_id=mid), "sent"
    ),
}


@pytest.mark.parametrize("report", SETTLING.values(), ids=SETTLING.keys())
def test_a_hard_bounce_or_complaint_settles_the_message_once_and_suppresses_the_address(
    api_url: str, db: sessionmaker[Session], sink: Sink, tenant: Tenant, report: Report
) -> None:
    email = f"{unique_workspace_key('gone')}@example.com"
    message = mailed(api_url, db, sink, tenant, email)
    assert message.message_id_header is not None
    token = bounce_token(db, tenant)
    body = report.body(email, message.message_id_header)

    answer = webhook(api_url, report.provider, token, body)
    again = webhook(api_url, report.provider, token, body)

    assert answer.status_code == 200, answer.text
    events = len(body) if isinstance(body, list) else 1
    assert answer.json() == {
        "events": events, "bounced": int(report.status == "bounced"), "complained": int(report.status == "complained"),
        "delayed": 0, "unmatched": 0, "ignored": events - 1, "detail": None,
    }  # fmt: skip
    assert (again.status_code, again.json()["ignored"]) == (200, events)
    assert message_state(db, message.id) == (report.status, ["sent", report.status], [(email, report.source)])
    next_event_is_suppressed(api_url, db, sink, tenant, email)


@pytest.mark.parametrize("report", SOFT.values(), ids=SOFT.keys())
def test_a_soft_bounce_is_noted_and_changes_nothing_else(
    api_url: str, db: sessionmaker[Session], sink: Sink, tenant: Tenant, report: Report
) -> None:
    email = f"{unique_workspace_key('full')}@example.com"
    message = mailed(api_url, db, sink, tenant, email)
    assert message.message_id_header is not None

    answer = webhook(api_url, report.provider, bounce_token(db, tenant), report.body(email, message.message_id_header))

    assert (answer.status_code, answer.json()["delayed"]) == (200, 1), answer.text
    assert message_state(db, message.id) == ("sent", ["sent", "delayed"], [])
    event_id = post(api_url, tenant, email).json()["id"]
    assert wait_until(lambda: message_of_event_settled(db, event_id), what="the next message").status == "sent"
    assert len(sink.to(email)) == 2


def test_a_token_of_another_workspace_matches_nothing(
    api_url: str, db: sessionmaker[Session], sink: Sink, tenant: Tenant, other_tenant: Tenant
) -> None:
    email = f"{unique_workspace_key('theirs')}@example.com"
    message = mailed(api_url, db, sink, tenant, email)
    assert message.message_id_header is not None
    body = MAILGUN_PERMANENT.adapted(recipient=email, message_id=message.message_id_header)

    answer = webhook(api_url, "mailgun", bounce_token(db, other_tenant), body)

    assert (answer.status_code, answer.json()["unmatched"]) == (200, 1), answer.text
    assert message_state(db, message.id) == ("sent", ["sent"], [])


def test_deliveries_and_other_events_are_accepted_and_ignored(
    api_url: str, db: sessionmaker[Session], tenant: Tenant
) -> None:
    token = bounce_token(db, tenant)
    bodies = {
        "ses": sns_notification(payload(SES_DELIVERY.path)),
        "postmark": payload("postmark/delivery.json"),
        "mailgun": payload("mailgun/delivered.json"),
        "sendgrid": sendgrid_events(["processed", "delivered", "open"], recipient="a@example.com", message_id="<x@y>"),
    }

    answers = {provider: webhook(api_url, provider, token, body) for provider, body in bodies.items()}

    for provider, answer in answers.items():
        assert answer.status_code == 200, f"{provider}: {answer.text}"
        summary = answer.json()
        assert summary["events"] == summary["ignored"] >= 1, f"{provider}: {summary}"


def test_an_sns_subscription_confirmation_is_logged_with_the_url_that_confirms_it(
    api_url: str, db: sessionmaker[Session], tenant: Tenant, workdir: Path, backend: str
) -> None:
    confirmation = payload("ses/sns_subscription_confirmation.json")

    answer = webhook(api_url, "ses", bounce_token(db, tenant), confirmation)

    assert answer.status_code == 200, answer.text
    assert answer.json()["events"] == 0 and "SubscribeURL" in answer.json()["detail"]
    log = workdir / f"api-{backend}.log"
    wait_until(lambda: confirmation["SubscribeURL"] in log.read_text(), what="the SubscribeURL in the api's log")


@pytest.mark.parametrize(
    ("provider", "body", "field"),
    [
        ("ses", b"not json", "body"),
        ("ses", payload("ses/sns_notification.json"), "Message"),
        ("postmark", {k: v for k, v in payload(POSTMARK_HARD.path).items() if k != "Email"}, "Email"),
        ("mailgun", {"signature": payload(MAILGUN_PERMANENT.path)["signature"]}, "event-data"),
        ("sendgrid", [{"event": "bounce", "type": "bounce"}], "0.email"),
        ("sendgrid", {"event": "bounce"}, "body"),
    ],
    ids=["ses-not-json", "sns-message-no-ses-notification", "postmark-no-email", "mailgun-no-event-data",
         "sendgrid-bounce-no-email", "sendgrid-not-a-batch"],
)  # fmt: skip
def test_a_malformed_body_is_refused_naming_the_field(
    api_url: str, db: sessionmaker[Session], tenant: Tenant, provider: str, body: Any, field: str
) -> None:
    answer = webhook(api_url, provider, bounce_token(db, tenant), body)

    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["field"] == field


@pytest.fixture
def signing_keys() -> tuple[ec.EllipticCurvePrivateKey, str]:
    return sendgrid_key_pair()


@pytest.fixture
def own_settings(own_settings: Settings, signing_keys: tuple[ec.EllipticCurvePrivateKey, str]) -> Settings:
    """The test's own stack, with Mailgun's signing key and SendGrid's verification key set."""
    return own_settings.model_copy(
        update={"mailgun_signing_key": SecretStr(MAILGUN_KEY), "sendgrid_verification_key": signing_keys[1]}
    )


@pytest.fixture
def own_sink(stack: OwnStack) -> Iterator[Sink]:
    with running_sink(stack.smtp_port) as sink:
        stack.start_worker()
        yield sink


def test_with_keys_set_only_verified_signatures_are_recorded(
    stack: OwnStack, own_sink: Sink, signing_keys: tuple[ec.EllipticCurvePrivateKey, str]
) -> None:
    tenant = stack.tenant("signed")
    token = bounce_token(stack.db, tenant)
    gone, blocked = (f"{unique_workspace_key(prefix)}@example.com" for prefix in ("gone", "blocked"))
    bounced = mailed(stack.api_url, stack.db, own_sink, tenant, gone)
    spared = mailed(stack.api_url, stack.db, own_sink, tenant, blocked)
    assert bounced.message_id_header is not None and spared.message_id_header is not None
    mailgun = MAILGUN_PERMANENT.adapted(recipient=gone, message_id=bounced.message_id_header)
    sendgrid = json.dumps(sendgrid_events(["bounce"], recipient=blocked, message_id=spared.message_id_header)).encode()
    signature = sendgrid_signature(signing_keys[0], "1600112502", sendgrid)

    # The documented payload's own signature was made with another key than this installation's.
    forged_mailgun = webhook(stack.api_url, "mailgun", token, mailgun)
    forged_sendgrid = webhook(
        stack.api_url, "sendgrid", token, sendgrid + b" ", headers=sendgrid_headers(signature, "1600112502")
    )
    unsigned_sendgrid = webhook(stack.api_url, "sendgrid", token, sendgrid)

    for answer in (forged_mailgun, forged_sendgrid, unsigned_sendgrid):
        assert (answer.status_code, answer.headers["content-type"]) == (403, "application/problem+json"), answer.text
        assert "signature does not verify" in answer.json()["detail"]
    assert message_state(stack.db, bounced.id) == ("sent", ["sent"], [])
    assert message_state(stack.db, spared.id) == ("sent", ["sent"], [])

    timestamp = str(mailgun["signature"]["timestamp"])
    mailgun["signature"]["signature"] = hmac.new(
        MAILGUN_KEY.encode(), (timestamp + mailgun["signature"]["token"]).encode(), hashlib.sha256
    ).hexdigest()
    signed_mailgun = webhook(stack.api_url, "mailgun", token, mailgun)
    signed_sendgrid = webhook(
        stack.api_url, "sendgrid", token, sendgrid, headers=sendgrid_headers(signature, "1600112502")
    )

    assert (signed_mailgun.status_code, signed_mailgun.json()["bounced"]) == (200, 1), signed_mailgun.text
    assert (signed_sendgrid.status_code, signed_sendgrid.json()["bounced"]) == (200, 1), signed_sendgrid.text
    assert message_state(stack.db, bounced.id)[0] == "bounced"
    assert message_state(stack.db, spared.id)[0] == "bounced"


def sendgrid_headers(signature: str, timestamp: str) -> dict[str, str]:
    return {
        "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


def test_without_a_token_a_webhook_is_refused(api_url: str) -> None:
    answer = httpx.post(f"{api_url}/v1/bounce-webhooks/postmark", json=payload(POSTMARK_HARD.path), timeout=10)

    assert answer.status_code == 401
    assert "HTTP Basic" in answer.json()["detail"]
