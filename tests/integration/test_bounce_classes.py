"""Permanent SMTP refusals through the whole stack: each fails its message, and only a refusal of the recipient's
address suppresses it."""

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import Tenant, make_tenant, password_reset_spec, sender_of, unique_workspace_key
from tests.support.event_posts import post
from tests.support.message_states import attempts, message_of_event_settled
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink
from tripmail.models import Message, Suppression


def suppression_reasons(db: sessionmaker[Session], email: str) -> list[str]:
    with db() as session:
        return list(session.scalars(select(Suppression.reason).where(Suppression.email == email)))


def failed_once(db: sessionmaker[Session], event_id: str, reply: str) -> Message:
    """The event's message, once settled; it must have failed at its one attempt, with the server's reply."""
    message = wait_until(lambda: message_of_event_settled(db, event_id), what="the refused message")
    code = int(reply[:3])
    assert (message.status, message.attempts, message.smtp_code, message.smtp_reply) == ("failed", 1, code, reply)
    assert attempts(db, message.id) == [("permanent", code)]
    return message


@pytest.mark.parametrize(
    ("prefix", "reply", "suppression"),
    [
        ("plain553-", "553 mailbox name not allowed", "RCPT TO: 553 mailbox name not allowed"),
        ("datauser-", "550 5.1.1 user unknown", "DATA: 550 5.1.1 user unknown"),
        ("policy-", "550 5.7.1 message refused as spam", None),
        ("relaydenied-", "554 5.7.1 relay access denied", None),
        ("datarefused-", "554 transaction failed", None),
    ],
    ids=["553 at RCPT", "5.1.1 at DATA", "5.7.1 at RCPT", "554 5.7.1 at RCPT", "554 at DATA"],
)
def test_a_permanent_refusal_fails_the_message_and_suppresses_only_a_refused_recipient(
    api_url: str,
    tenant: Tenant,
    sink: Sink,
    db: sessionmaker[Session],
    prefix: str,
    reply: str,
    suppression: str | None,
) -> None:
    email = f"{prefix}{unique_workspace_key('class')}@example.com"
    failed_once(db, post(api_url, tenant, email).json()["id"], reply)
    assert suppression_reasons(db, email) == ([suppression] if suppression else [])
    assert sink.refusals(email) == 1
    assert sink.to(email) == []


def test_a_refused_sender_fails_the_message_and_suppresses_no_recipient(
    api_url: str, sink: Sink, db: sessionmaker[Session]
) -> None:
    key = unique_workspace_key("sender")
    spec = password_reset_spec(key)
    spec["from"] = f"Acme <refused-sender-{sender_of(key)}>"
    tenant = make_tenant(db, spec)
    email = f"{key}@example.com"

    failed_once(db, post(api_url, tenant, email).json()["id"], "550 5.7.1 sender rejected")
    assert suppression_reasons(db, email) == []
    assert sink.refusals(f"refused-sender-{sender_of(key)}") == 1
    assert sink.to(email) == []


def test_an_address_refused_by_policy_is_offered_to_the_server_again(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"policy-{unique_workspace_key('again')}@example.com"
    failed_once(db, post(api_url, tenant, email).json()["id"], "550 5.7.1 message refused as spam")

    failed_once(db, post(api_url, tenant, email).json()["id"], "550 5.7.1 message refused as spam")
    assert sink.refusals(email) == 2
    assert suppression_reasons(db, email) == []
