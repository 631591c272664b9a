"""Webhook steps: a delivery per run step, POSTed signed to a receiver on loopback, retried on 5xx."""

import json
import socket
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import make_template, make_workspace
from tests.support.webhook_receiver import Receiver
from tripmail.ids import new_id
from tripmail.ingest.recording import record_event
from tripmail.models import WebhookDelivery
from tripmail.schemas.trigger import Audience, TriggerRequest
from tripmail.webhooks.deliveries import MAX_ATTEMPTS, due_webhooks, mark_handed_out, signature
from tripmail.webhooks.egress import Network, parse_networks, webhook_client
from tripmail.webhooks.flow import fire_webhooks

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "s3cret-for-the-hook-receiver"
LOOPBACK = parse_networks("127.0.0.0/8")


def hooked(sessions: sessionmaker[Session], url: str) -> int:
    spec = {
        "workspace": "hooks",
        "templates": [make_template("t", "s", "t")],
        "automations": [
            {
                "name": "Notify",
                "trigger": "order_paid",
                "steps": [{"webhook": {"url": url, "secret": SECRET}}, {"send_email": {"template": "t"}}],
            }
        ],
    }
    with sessions.begin() as session:
        workspace_id = make_workspace(session, spec)
    event_id = new_id()
    trigger = TriggerRequest(
        workspace_id=workspace_id,
        event="order_paid",
        audience=Audience(email="ann@example.com"),
        data={"order": "o-1"},
        hooks={"crm_stage": "won"},
    )
    with sessions.begin() as session:
        record_event(session, event_id, trigger, now=NOW)
        return session.scalars(select(WebhookDelivery.id)).one()


def fire(
    sessions: sessionmaker[Session], delivery_id: int, now: datetime, allowed: Sequence[Network] = LOOPBACK
) -> WebhookDelivery:
    with webhook_client(allowed) as client:
        fire_webhooks(sessions, [delivery_id], client=client, clock=lambda: now)
    with sessions() as session:
        return session.get_one(WebhookDelivery, delivery_id)


def test_a_webhook_is_retried_after_a_500_and_signed(sessions: sessionmaker[Session]) -> None:
    with Receiver.running([500, 200]) as receiver:
        retried_and_signed(sessions, receiver)


def retried_and_signed(sessions: sessionmaker[Session], receiver: Receiver) -> None:
    delivery_id = hooked(sessions, receiver.url)
    with sessions.begin() as session:
        assert due_webhooks(session, now=NOW, limit=10).ids == [delivery_id]
        mark_handed_out(session, [delivery_id], now=NOW)  # as the scheduler does, before a worker claims it
        assert due_webhooks(session, now=NOW, limit=10).ids == []

    first = fire(sessions, delivery_id, NOW)
    assert (first.status, first.attempts, first.last_code) == ("pending", 1, 500)
    assert NOW + timedelta(seconds=2) <= first.next_attempt_at <= NOW + timedelta(seconds=3)
    with sessions() as session:
        assert due_webhooks(session, now=NOW + timedelta(seconds=1), limit=10).ids == []
    assert fire(sessions, delivery_id, NOW + timedelta(seconds=1)).attempts == 1  # not due: not posted

    later = first.next_attempt_at
    second = fire(sessions, delivery_id, later)
    assert (second.status, second.attempts, second.last_code, second.last_error) == ("sent", 2, 200, None)
    assert len(receiver.received) == 2
    headers, body = receiver.received[1]
    timestamp = headers["X-Tripmail-Timestamp"]
    assert int(timestamp) == int(later.timestamp())
    assert headers["X-Tripmail-Signature"] == signature(SECRET, int(timestamp), body.decode())
    assert headers["X-Tripmail-Delivery"] == str(delivery_id)
    document = json.loads(body)
    assert document["custom_data"] == {"crm_stage": "won"}
    assert (document["event"]["name"], document["event"]["data"]) == ("order_paid", {"order": "o-1"})
    assert document["contact"]["email"] == "ann@example.com"
    assert receiver.received[0][1] == body  # every attempt posts the same document


def test_a_hand_out_marked_after_the_worker_recorded_the_attempt_does_not_hold_the_next_one_back(
    sessions: sessionmaker[Session],
) -> None:
    with Receiver.running([500, 200]) as receiver:
        delivery_id = hooked(sessions, receiver.url)
        with sessions() as session:
            assert due_webhooks(session, now=NOW, limit=10).ids == [delivery_id]
        # Published; the worker claims, posts and records before the scheduler's transaction marks it handed out.
        first = fire(sessions, delivery_id, NOW)
        with sessions.begin() as session:
            mark_handed_out(session, [delivery_id], now=NOW)
        with sessions() as session:
            assert due_webhooks(session, now=first.next_attempt_at, limit=10).ids == [delivery_id]
        assert fire(sessions, delivery_id, first.next_attempt_at).status == "sent"


def test_a_refusal_fails_the_delivery_at_once_keeping_its_status_not_its_body(sessions: sessionmaker[Session]) -> None:
    with Receiver.running([404], answer=b"internal: db=10.0.0.5 user=admin") as receiver:
        delivery = fire(sessions, hooked(sessions, receiver.url), NOW)
    assert (delivery.status, delivery.attempts, delivery.last_code) == ("failed", 1, 404)
    assert delivery.last_error == "404 Not Found"


def test_a_non_public_address_fails_at_once_and_is_never_posted(sessions: sessionmaker[Session]) -> None:
    with Receiver.running([200], host="127.0.0.1") as receiver:
        delivery = fire(sessions, hooked(sessions, receiver.url), NOW, allowed=())
    assert (delivery.status, delivery.attempts, delivery.last_code) == ("failed", 1, None)
    assert delivery.last_error == (
        "webhook address 127.0.0.1 is not public (loopback); see TRIPMAIL_WEBHOOK_ALLOW_NETWORKS"
    )
    assert receiver.received == []


def test_an_answer_that_is_not_http_is_not_kept(sessions: sessionmaker[Session]) -> None:
    # A whole head (up to the blank line), which h11 refuses quoting its status line.
    banner = b"-ERR internal service banner 7f3a\r\n\r\n"
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]

        def answer_once() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(banner)

        thread = threading.Thread(target=answer_once, daemon=True)
        thread.start()
        delivery = fire(sessions, hooked(sessions, f"http://127.0.0.1:{port}/hook"), NOW)
        thread.join(timeout=10)
    assert (delivery.status, delivery.attempts, delivery.last_code) == ("pending", 1, None)
    assert delivery.last_error is not None
    assert delivery.last_error.startswith("RemoteProtocolError")
    assert "banner" not in delivery.last_error and "7f3a" not in delivery.last_error


def test_an_unreachable_receiver_is_retried_until_the_attempts_run_out(sessions: sessionmaker[Session]) -> None:
    delivery_id = hooked(sessions, "http://127.0.0.1:9/unreachable")
    now = NOW
    for attempt in range(1, MAX_ATTEMPTS + 1):
        delivery = fire(sessions, delivery_id, now)
        assert delivery.attempts == attempt
        now = delivery.next_attempt_at
    assert (delivery.status, delivery.last_code) == ("failed", None)
    assert delivery.last_error is not None
    assert delivery.last_error.startswith("ConnectError")
