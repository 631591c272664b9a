"""Delivery outcomes through the whole stack: retries, bounces and suppression, attempts, concurrent duplicates."""

import asyncio
from datetime import UTC, datetime
from urllib.parse import quote, urlsplit

import httpx
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import (
    Tenant,
    contact_row,
    make_template,
    make_tenant,
    password_reset_spec,
    sender_of,
    unique_workspace_key,
)
from tests.support.event_posts import post
from tests.support.message_states import attempts, message_of_event_settled
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink
from tests.support.unsubscribe_links import mangled
from tripmail.contacts.unsubscribe import unsubscribe_token
from tripmail.ids import new_id
from tripmail.models import Contact, Event, Message, MessageAttempt, Suppression, Workspace


def test_a_transient_refusal_is_retried_until_it_is_sent(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"flaky-{unique_workspace_key('f')}@example.com"
    event_id = post(api_url, tenant, email).json()["id"]

    message = wait_until(lambda: message_of_event_settled(db, event_id), timeout=60, what="the retried message")
    assert (message.status, message.attempts) == ("sent", 2)
    assert attempts(db, message.id) == [("transient", 421), ("sent", 250)]
    assert len(sink.to(email)) == 1


def test_a_hard_bounce_fails_once_and_suppresses_the_address(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"reject-{unique_workspace_key('b')}@example.com"
    first_id = post(api_url, tenant, email).json()["id"]
    first = wait_until(lambda: message_of_event_settled(db, first_id), what="the bounce")
    assert (first.status, first.attempts) == ("failed", 1)
    assert attempts(db, first.id) == [("permanent", 550)]
    with db() as session:
        [suppression] = session.scalars(select(Suppression).where(Suppression.email == email)).all()
    assert "550" in suppression.reason

    later_id = post(api_url, tenant, email).json()["id"]
    later = wait_until(lambda: message_of_event_settled(db, later_id), what="the next message")
    assert (later.status, later.attempts) == ("suppressed", 0)
    assert attempts(db, later.id) == []
    assert sink.to(email) == []


def test_a_thousand_identical_events_at_once_send_one_email(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"{unique_workspace_key('same')}@example.com"
    body = {"event": "FORGOT_PASSWORD", "key": "one-of-a-thousand", "contact": {"email": email}, "data": {}}

    async def fire() -> list[httpx.Response]:
        # 100 connections, each a client of its own sending 10 in turn: one client's pool of 100 spent most of the
        # test rescanning its connections for each of the 1,000 requests.
        headers = {"Authorization": f"Bearer {tenant.token}"}

        async def connection() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=120, headers=headers) as client:
                return [await client.post(f"{api_url}/v1/events", json=body) for _ in range(10)]

        return [response for batch in await asyncio.gather(*(connection() for _ in range(100))) for response in batch]

    responses = asyncio.run(fire())
    assert {response.status_code for response in responses} == {202}
    answers = [response.json() for response in responses]
    assert len({answer["id"] for answer in answers}) == 1
    assert sum(1 for answer in answers if not answer["duplicate"]) == 1
    wait_until(lambda: message_of_event_settled(db, answers[0]["id"]), what="the one message")
    assert len(sink.to(email)) == 1


def test_a_tenth_deferred_and_a_fiftieth_bounced_all_settle_as_they_should(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    # 500 events: every 10th address gets 421 (and a closed connection) on first offer, every 50th gets 550.
    prefix = unique_workspace_key("mix")
    emails = [
        f"{'reject-' if i % 50 == 0 else 'flaky-' if i % 10 == 5 else ''}{prefix}-{i}@example.com" for i in range(500)
    ]
    events = [{"event": "FORGOT_PASSWORD", "contact": {"email": email}, "data": {}} for email in emails]
    response = httpx.post(
        f"{api_url}/v1/events/batch",
        json={"events": events},
        headers={"Authorization": f"Bearer {tenant.token}"},
        timeout=60,
    )
    assert response.json()["accepted"] == 500, response.text

    def trails() -> dict[str, tuple[str, ...]] | None:
        """Each address: its message's status, then its attempts in order; once all 500 are sent or failed."""
        with db() as session:
            rows = session.execute(
                select(Message.to_address, Message.status, MessageAttempt.outcome, MessageAttempt.smtp_code)
                .join(MessageAttempt, MessageAttempt.message_id == Message.id, isouter=True)
                .join(Workspace, Message.workspace_id == Workspace.id)
                .where(Workspace.key == tenant.key)
                .order_by(MessageAttempt.id)
            ).all()
        by_address: dict[str, list[str]] = {}
        for address, status, outcome, code in rows:
            by_address.setdefault(address, [status]).append(f"{outcome} {code}")
        done = len(by_address) == 500 and all(trail[0] in ("sent", "failed") for trail in by_address.values())
        return {address: tuple(trail) for address, trail in by_address.items()} if done else None

    final_trails = wait_until(trails, timeout=120, what="500 messages settled")
    expected = {
        email: ("failed", "permanent 550")
        if email.startswith("reject-")
        else ("sent", "transient 421", "sent 250")
        if email.startswith("flaky-")
        else ("sent", "sent 250")
        for email in emails
    }
    assert final_trails == expected
    received = sink.recipients_from(tenant.sender)
    assert received == {email: 1 for email in emails if not email.startswith("reject-")}
    with db() as session:
        suppressed = set(session.scalars(select(Suppression.email).where(Suppression.email.like(f"reject-{prefix}-%"))))
    assert suppressed == {email for email in emails if email.startswith("reject-")}


def test_marketing_mail_unsubscribes_in_one_click_and_transactional_mail_still_arrives(
    api_url: str, sink: Sink, db: sessionmaker[Session]
) -> None:
    key = unique_workspace_key("news")
    spec = password_reset_spec(key)
    spec["event_types"].append({"key": "NEWSLETTER", "name": "Newsletter"})
    spec["templates"].append(make_template("news", "News for {{ contact.email }}", "Hello"))
    spec["automations"].append(
        {
            "name": "News",
            "trigger": "NEWSLETTER",
            "transactional": False,
            "steps": [{"send_email": {"template": "news"}}],
        }
    )
    tenant = make_tenant(db, spec)
    email = f"{key}@example.com"

    post(api_url, tenant, email, event="NEWSLETTER")
    [news] = wait_until(lambda: sink.to(email), what="the newsletter")
    link = news.message["List-Unsubscribe"].strip().strip("<>")  # the header may be folded before its value
    assert news.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    path = urlsplit(link).path

    page = httpx.get(f"{api_url}{path}", timeout=10)
    assert page.status_code == 200
    assert email in page.text and 'method="post"' in page.text
    assert forged_status(api_url, path) == 404
    with db() as session:
        assert session.scalars(select(Contact.consents).where(Contact.email == email)).one() == {"email": True}

    # What a mail client sends for RFC 8058 one-click unsubscribe.
    done = httpx.post(
        f"{api_url}{path}",
        content=b"List-Unsubscribe=One-Click",
        timeout=10,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200
    with db() as session:
        assert session.scalars(select(Contact.consents).where(Contact.email == email)).one() == {"email": False}

    skipped_id = post(api_url, tenant, email, event="NEWSLETTER").json()["id"]
    post(api_url, tenant, email)
    [_, reset] = wait_until(lambda: mails if len(mails := sink.to(email)) == 2 else None, what="the reset email")
    wait_until(lambda: processed(db, skipped_id), what="the second newsletter event processed")
    assert reset.message["Subject"] == f"Reset for {email}"
    assert reset.message["List-Unsubscribe"] is None
    with db() as session:
        assert session.scalar(select(func.count()).where(Message.event_id == skipped_id)) == 0
    assert len(sink.to(email, sender=sender_of(key))) == 2


def forged_status(api_url: str, path: str) -> int:
    forged = path[:-1] + ("0" if path[-1] != "0" else "1")
    return httpx.post(f"{api_url}{forged}", timeout=10).status_code


def processed(db: sessionmaker[Session], event_id: str) -> bool:
    with db() as session:
        event = session.get(Event, event_id)
        return event is not None and event.processed_at is not None


def test_unsubscribe_links_with_oversized_or_malformed_parts_answer_404(
    api_url: str, tenant: Tenant, db: sessionmaker[Session]
) -> None:
    with db.begin() as session:
        workspace = session.scalars(select(Workspace).where(Workspace.key == tenant.key)).one()
        contact_id = new_id()
        row = contact_row(workspace.id, contact_id, f"{tenant.key}@example.com", {}, datetime.now(UTC))
        session.execute(insert(Contact).values(row))
        genuine = unsubscribe_token(workspace, contact_id)
    assert httpx.get(f"{api_url}/unsubscribe/{quote(genuine, safe='')}", timeout=10).status_code == 200
    # httpx sends no URL over 64 KiB: the longest links are the unit tests' alone.
    sendable = {what: path for what, token in mangled(genuine).items() if len(path := quote(token, safe="")) < 60_000}
    answers = {}
    for what, path in sendable.items():
        page = httpx.get(f"{api_url}/unsubscribe/{path}", timeout=10)
        one_click = httpx.post(f"{api_url}/unsubscribe/{path}", timeout=10)
        answers[what] = (page.status_code, page.headers["content-type"], one_click.status_code)
    assert answers == dict.fromkeys(sendable, (404, "application/problem+json", 404))
