"""Delivery outcomes through the whole stack: retries, bounces and suppression, attempts, concurrent duplicates."""

import asyncio

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.builders import unique_workspace_key
from tests.integration.conftest import Sink, Tenant, wait_until
from tripmail.models import Message, MessageAttempt, Suppression


def post(api_url: str, tenant: Tenant, email: str, key: str | None = None) -> httpx.Response:
    body = {"event": "FORGOT_PASSWORD", "key": key, "contact": {"email": email}, "data": {"forgot_password_link": "x"}}
    return httpx.post(
        f"{api_url}/v1/events", json=body, headers={"Authorization": f"Bearer {tenant.token}"}, timeout=30
    )


def settled(db: sessionmaker[Session], event_id: str) -> Message | None:
    with db() as session:
        message = session.scalars(select(Message).where(Message.event_id == event_id)).one_or_none()
    return message if message is not None and message.status not in ("pending", "sending") else None


def attempts(db: sessionmaker[Session], message_id: int) -> list[tuple[str, int | None]]:
    with db() as session:
        rows = session.scalars(
            select(MessageAttempt).where(MessageAttempt.message_id == message_id).order_by(MessageAttempt.id)
        )
        return [(row.outcome, row.smtp_code) for row in rows]


def test_a_transient_refusal_is_retried_until_it_is_sent(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"flaky-{unique_workspace_key('f')}@example.com"
    event_id = post(api_url, tenant, email).json()["id"]

    message = wait_until(lambda: settled(db, event_id), timeout=60, what="the retried message")
    assert (message.status, message.attempts) == ("sent", 2)
    assert attempts(db, message.id) == [("transient", 421), ("sent", 250)]
    assert len(sink.to(email)) == 1


def test_a_hard_bounce_fails_once_and_suppresses_the_address(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"reject-{unique_workspace_key('b')}@example.com"
    first_id = post(api_url, tenant, email).json()["id"]
    first = wait_until(lambda: settled(db, first_id), what="the bounce")
    assert (first.status, first.attempts) == ("failed", 1)
    assert attempts(db, first.id) == [("permanent", 550)]
    with db() as session:
        [suppression] = session.scalars(select(Suppression).where(Suppression.email == email)).all()
    assert "550" in suppression.reason

    later_id = post(api_url, tenant, email).json()["id"]
    later = wait_until(lambda: settled(db, later_id), what="the next message")
    assert (later.status, later.attempts) == ("suppressed", 0)
    assert attempts(db, later.id) == []
    assert sink.to(email) == []


def test_a_thousand_identical_events_at_once_send_one_email(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"{unique_workspace_key('same')}@example.com"
    body = {"event": "FORGOT_PASSWORD", "key": "one-of-a-thousand", "contact": {"email": email}, "data": {}}

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            headers = {"Authorization": f"Bearer {tenant.token}"}
            return await asyncio.gather(
                *(client.post(f"{api_url}/v1/events", json=body, headers=headers) for _ in range(1000))
            )

    responses = asyncio.run(fire())
    assert {response.status_code for response in responses} == {202}
    answers = [response.json() for response in responses]
    assert len({answer["id"] for answer in answers}) == 1
    assert sum(1 for answer in answers if not answer["duplicate"]) == 1
    wait_until(lambda: settled(db, answers[0]["id"]), what="the one message")
    assert len(sink.to(email)) == 1
