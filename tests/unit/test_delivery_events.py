"""Delivery events: Standard Webhooks signatures, and deliveries written in the transaction that changes a message's
status (an outbox), to the endpoints of the message's workspace that receive that type, and to no other."""

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook, WebhookVerificationError

from tests.support.builders import workspace_with_messages
from tripmail.db import engine_of
from tripmail.delivery.claims import claim_messages, settle_unfinished
from tripmail.delivery.journal import record_results
from tripmail.delivery.retries import RetryPolicy
from tripmail.delivery.smtp import Outcome, SendResult, Stage
from tripmail.delivery.suppressions import add_suppressions
from tripmail.errors import InvalidRequest, NotFound
from tripmail.ids import new_id
from tripmail.ingest.recording import record_event
from tripmail.models import Message, WebhookDelivery, WebhookEndpoint
from tripmail.schemas.trigger import Audience, TriggerRequest
from tripmail.webhooks.deliveries import due_webhooks, standard_headers
from tripmail.webhooks.delivery_events import (
    EVENT_TYPES,
    Subscriptions,
    add_endpoint,
    announce,
    list_endpoints,
    new_secret,
    remove_endpoint,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RETRIES = RetryPolicy(waits=(timedelta(minutes=1),), give_up_after=timedelta(hours=1))
BODY = '{"type":"message.sent","data":{"message_id":1}}'


def test_a_signature_verifies_with_the_standard_webhooks_library() -> None:
    secret = new_secret()
    timestamp = int(time.time())  # the verifier refuses a timestamp more than 5 minutes from its clock
    headers = standard_headers(secret, "msg_1", timestamp, BODY)

    assert Webhook(secret).verify(BODY, headers) == json.loads(BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace("1", "2"), headers)


def test_a_signature_is_the_specs_hmac_of_id_timestamp_and_body() -> None:
    secret = new_secret()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"msg_7.1767225600.{BODY}".encode(), hashlib.sha256).digest()

    headers = standard_headers(secret, "msg_7", 1767225600, BODY)

    assert headers == {
        "webhook-id": "msg_7",
        "webhook-timestamp": "1767225600",
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
    assert secret.startswith("whsec_") and len(key) == 32


def endpoint(sessions: sessionmaker[Session], workspace_id: int, event_types: list[str] | None = None) -> int:
    with sessions.begin() as session:
        return add_endpoint(session, workspace_id, "https://hooks.example/in", event_types=event_types, now=NOW).id


def deliveries(sessions: sessionmaker[Session]) -> list[tuple[int | None, dict[str, Any]]]:
    """Each webhook delivery to an endpoint: the endpoint and the body, in the order they were written."""
    with sessions() as session:
        rows = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.endpoint_id.is_not(None)).order_by(WebhookDelivery.id)
        )
        return [(row.endpoint_id, json.loads(row.body)) for row in rows]


def results(sessions: sessionmaker[Session], outcomes: dict[int, SendResult], *, commit: bool) -> None:
    """Claim the messages and record these results in one transaction, committed or rolled back."""
    with sessions() as session, session.begin():
        claims = claim_messages(session, list(outcomes), run_id="run-1", now=NOW)
        record_results(session.connection(), list(outcomes.values()), claims, now=NOW, retries=RETRIES)
        if not commit:
            session.rollback()


@pytest.fixture(autouse=True)
def fresh_subscriptions(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read of the endpoints is fresh: a test adds one and announces at once."""
    monkeypatch.setattr("tripmail.webhooks.delivery_events.SUBSCRIPTIONS", Subscriptions(fresh_s=0))


def test_recorded_results_write_their_events_in_the_same_transaction(sessions: sessionmaker[Session]) -> None:
    workspace_id, (sent, refused) = workspace_with_messages(
        sessions, "acme", ["ann@example.com", "bob@example.com"], now=NOW
    )
    everything = endpoint(sessions, workspace_id)
    outcomes = {
        sent: SendResult(sent, Outcome.SENT, 250, "250 2.0.0 queued", relay="relay-a"),
        refused: SendResult(refused, Outcome.PERMANENT, 550, "550 5.1.1 no such user", Stage.RCPT, "relay-a"),
    }

    results(sessions, outcomes, commit=False)
    assert deliveries(sessions) == []
    with sessions() as session:
        assert set(session.scalars(select(Message.status))) == {"pending"}

    results(sessions, outcomes, commit=True)
    written = deliveries(sessions)
    assert [(endpoint_id, body["type"]) for endpoint_id, body in written] == [
        (everything, "message.sent"),
        (everything, "message.failed"),
    ]
    with sessions() as session:
        event_ids = dict(session.execute(select(Message.id, Message.event_id)).all())
        [automation_id] = set(session.scalars(select(Message.automation_id)))
    assert [body for _, body in written] == [
        {
            "type": "message.sent",
            "timestamp": "2026-03-01T12:00:00.000Z",
            "data": {
                "message_id": sent,
                "event_id": event_ids[sent],
                "workspace": "acme",
                "to": "ann@example.com",
                "status": "sent",
                "smtp_code": 250,
                "smtp_reply": "250 2.0.0 queued",
                "relay": "relay-a",
                "message_id_header": None,
                "automation_id": automation_id,
            },
        },
        {
            "type": "message.failed",
            "timestamp": "2026-03-01T12:00:00.000Z",
            "data": {
                "message_id": refused,
                "event_id": event_ids[refused],
                "workspace": "acme",
                "to": "bob@example.com",
                "status": "failed",
                "smtp_code": 550,
                "smtp_reply": "550 5.1.1 no such user",
                "relay": "relay-a",
                "message_id_header": None,
                "automation_id": automation_id,
            },
        },
    ]


def test_each_delivery_has_its_own_webhook_id_and_waits_for_the_scheduler(sessions: sessionmaker[Session]) -> None:
    workspace_id, ids = workspace_with_messages(sessions, "acme", ["ann@example.com", "bob@example.com"], now=NOW)
    endpoint(sessions, workspace_id)
    endpoint(sessions, workspace_id, ["message.sent"])
    results(sessions, {key: SendResult(key, Outcome.SENT, 250, "250 ok") for key in ids}, commit=True)
    with sessions() as session:
        rows = session.scalars(select(WebhookDelivery)).all()
    assert len(rows) == 4
    assert len({row.webhook_id for row in rows}) == 4
    assert all(row.webhook_id and row.webhook_id.startswith("msg_") for row in rows)
    assert {(row.status, row.attempts, row.next_attempt_at) for row in rows} == {("pending", 0, NOW)}
    # Due for the scheduler to hand out, in the bulk lane: a delivery event belongs to no automation.
    with sessions() as session:
        due = due_webhooks(session, now=NOW, limit=10)
    assert (sorted(due.bulk), due.transactional) == (sorted(row.id for row in rows), [])


def test_an_endpoint_receives_only_its_types_and_only_its_workspaces(sessions: sessionmaker[Session]) -> None:
    acme, (acme_sent, acme_failed) = workspace_with_messages(
        sessions, "acme", ["a@example.com", "b@example.com"], now=NOW
    )
    other, (other_failed,) = workspace_with_messages(sessions, "other", ["c@example.com"], now=NOW)
    failures_only = endpoint(sessions, acme, ["message.failed"])
    others = endpoint(sessions, other, ["message.sent"])

    results(
        sessions,
        {
            acme_sent: SendResult(acme_sent, Outcome.SENT, 250, "250 ok"),
            acme_failed: SendResult(acme_failed, Outcome.PERMANENT, 554, "554 refused"),
            other_failed: SendResult(other_failed, Outcome.PERMANENT, 554, "554 refused"),
        },
        commit=True,
    )

    assert [(endpoint_id, body["type"], body["data"]["message_id"]) for endpoint_id, body in deliveries(sessions)] == [
        (failures_only, "message.failed", acme_failed)
    ]
    assert others not in {endpoint_id for endpoint_id, _ in deliveries(sessions)}


def test_a_disabled_or_removed_endpoint_is_sent_nothing(sessions: sessionmaker[Session]) -> None:
    workspace_id, (first, second) = workspace_with_messages(
        sessions, "acme", ["a@example.com", "b@example.com"], now=NOW
    )
    with sessions.begin() as session:
        add_endpoint(session, workspace_id, "https://hooks.example/off", enabled=False, now=NOW)
    removed = endpoint(sessions, workspace_id)
    results(sessions, {first: SendResult(first, Outcome.SENT, 250, "250 ok")}, commit=True)
    assert [endpoint_id for endpoint_id, _ in deliveries(sessions)] == [removed]

    with sessions.begin() as session:
        remove_endpoint(session, workspace_id, removed)
    results(sessions, {second: SendResult(second, Outcome.SENT, 250, "250 ok")}, commit=True)
    assert deliveries(sessions) == []  # its pending delivery went with it


@contextmanager
def counted_statements(sessions: sessionmaker[Session]) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = engine_of(sessions)
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_a_workspace_without_endpoints_costs_no_statement_while_what_was_read_is_fresh(
    sessions: sessionmaker[Session],
) -> None:
    workspace_id, ids = workspace_with_messages(sessions, "acme", ["a@example.com"], now=NOW)
    other, _ = workspace_with_messages(sessions, "other", ["b@example.com"], now=NOW)
    endpoint(sessions, other)
    subscriptions = Subscriptions(fresh_s=3600)
    with sessions.begin() as session, counted_statements(sessions) as statements:
        for event_type in EVENT_TYPES:
            assert announce(session, workspace_id, ids, event_type, now=NOW, subscriptions=subscriptions) == 0
    assert len(statements) == 1, statements  # every workspace's endpoints, read once


def test_suppressed_at_planning_and_unknown_at_settling_are_announced(sessions: sessionmaker[Session]) -> None:
    workspace_id, (handed_over,) = workspace_with_messages(sessions, "acme", ["a@example.com"], now=NOW)
    endpoint(sessions, workspace_id)
    with sessions.begin() as session:
        claim_messages(session, [handed_over], run_id="run-1", now=NOW)
        session.execute(update(Message).values(handed_over_at=NOW))  # the run dies with the message at the server
    with sessions.begin() as session:
        settle_unfinished(session, run_id="run-1", now=NOW)
    with sessions.begin() as session:
        add_suppressions(session, workspace_id, ["gone@example.com"], reason="left", now=NOW)
        trigger = TriggerRequest(
            workspace_id=workspace_id, event="forgot_password", audience=Audience(email="gone@example.com")
        )
        assert record_event(session, new_id(), trigger, now=NOW).ids == []

    assert [(body["type"], body["data"]["to"], body["data"]["status"]) for _, body in deliveries(sessions)] == [
        ("message.unknown", "a@example.com", "unknown"),
        ("message.suppressed", "gone@example.com", "suppressed"),
    ]


def test_endpoints_are_checked_listed_and_removed_within_their_workspace(sessions: sessionmaker[Session]) -> None:
    acme, _ = workspace_with_messages(sessions, "acme", [], now=NOW)
    other, _ = workspace_with_messages(sessions, "other", [], now=NOW)
    with sessions.begin() as session:
        created = add_endpoint(
            session, acme, " https://hooks.example/in ", event_types=["message.failed", "message.sent"], now=NOW
        )
        for url, types, field in [
            ("ftp://hooks.example/in", None, "url"),
            ("https://", None, "url"),
            ("https://hooks.example/in", ["message.opened"], "event_types"),
            ("https://hooks.example/in", [], "event_types"),
        ]:
            with pytest.raises(InvalidRequest) as refused:
                add_endpoint(session, acme, url, event_types=types, now=NOW)
            assert refused.value.field == field
    assert created.event_types == ["message.sent", "message.failed"]
    assert created.url == "https://hooks.example/in"
    with sessions() as session:
        assert [view.model_dump() for view in list_endpoints(session, acme)] == [created.model_dump(exclude={"secret"})]
        assert list_endpoints(session, other) == []
        stored = session.get_one(WebhookEndpoint, created.id)
        assert stored.secret == created.secret
    with sessions.begin() as session, pytest.raises(NotFound):
        remove_endpoint(session, other, created.id)
    with sessions.begin() as session:
        remove_endpoint(session, acme, created.id)
        assert list_endpoints(session, acme) == []
