"""Crashes and outages through real processes: each test runs a stack of its own (a Redis database, a SQLite
file, an api, workers and an SMTP server) so it can kill and start them without touching the shared one."""

import time

import httpx
import pytest
from sqlalchemy import func, select

from tests.support.builders import (
    CAMPAIGN,
    campaign_audience,
    sender_of,
)
from tests.support.event_posts import post_reset
from tests.support.message_states import statuses, workspace_messages_settled
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink, running_sink
from tests.support.stack import OwnStack, kill_group, kill_pool
from tripmail.models import Event, Message, MessageAttempt


def start_campaign(api_url: str, token: str) -> None:
    body = {"token": token, "id": CAMPAIGN, "custom_request": {"rank": {"$gte": 0}}}
    response = httpx.post(f"{api_url}/compat/altcraft/api/v1.1/campaigns/triggers/start/", json=body, timeout=60)
    assert response.json()["error"] == 0, response.text


def quiet_while_held(sink: Sink, sender: str) -> bool:
    """Every connection is waiting on a withheld reply: nothing arrives for a whole second."""
    before = sink.count_from(sender)
    time.sleep(1)
    return sink.held > 0 and sink.count_from(sender) == before


@pytest.mark.timeout(400)
def test_a_worker_killed_mid_run_loses_nothing_and_doubles_nothing(stack: OwnStack) -> None:
    size = 2000
    key, token, emails = campaign_audience(stack.db, size)
    sender = sender_of(key)
    with running_sink(stack.smtp_port) as sink:
        first = stack.start_worker("worker-1")
        start_campaign(stack.api_url, token)
        wait_until(lambda: sink.count_from(sender) >= size // 4, timeout=120, what="a quarter of the emails")

        # Kill while every connection waits for its RCPT reply: messages claimed and not yet handed over,
        # others already sent, the rest still queued in Redis.
        sink.hold_rcpt.set()
        wait_until(lambda: quiet_while_held(sink, sender), timeout=30, what="all connections held")
        with stack.db() as session:
            in_flight = session.scalars(
                select(func.count()).where(Message.status == "sending", Message.handed_over_at.is_(None))
            ).one()
        kill_group(first)
        sink.hold_rcpt.clear()
        delivered_before_the_kill = sink.count_from(sender)
        assert in_flight > 0
        assert size // 4 <= delivered_before_the_kill < size

        stack.start_worker("worker-2")
        wait_until(lambda: sink.count_from(sender) >= size, timeout=240, what="every email after the restart")
        final = wait_until(
            lambda: workspace_messages_settled(stack.db, key, size), timeout=60, what="every message settled"
        )
        received = sink.recipients_from(sender)

    assert final == {"sent": size}
    assert set(received) == set(emails)
    assert set(received.values()) == {1}


@pytest.mark.timeout(300)
def test_a_worker_killed_before_the_reply_to_data_leaves_the_message_unknown_and_unsent(stack: OwnStack) -> None:
    tenant = stack.tenant("window")
    email = f"{tenant.key}@example.com"
    with running_sink(stack.smtp_port) as sink:
        first = stack.start_worker("worker-1")
        sink.hold_data.set()
        post_reset(stack.api_url, tenant.token, email)
        wait_until(lambda: sink.held == 1, what="the message handed over, its reply withheld")
        kill_group(first)
        sink.hold_data.clear()

        stack.start_worker("worker-2")
        final = wait_until(
            lambda: workspace_messages_settled(stack.db, tenant.key, 1), timeout=120, what="the message settled"
        )
        with stack.db() as session:
            message = session.scalars(select(Message).where(Message.to_address == email)).one()
            attempts = session.scalars(select(MessageAttempt).where(MessageAttempt.message_id == message.id)).all()
        delivered = sink.to(email)

    # The server had taken the message when the worker died: resending would have made it two.
    assert final == {"unknown": 1}
    assert len(delivered) == 1
    assert [(attempt.outcome, attempt.smtp_code) for attempt in attempts] == [("unknown", None)]
    assert "may have accepted it" in (message.smtp_reply or "")

    # An operator who finds it missing from the relay's logs sends it again, explicitly.
    listed = stack.tripmail("messages", "list", "--status", "unknown")
    assert f"{message.id}  " in listed and email in listed and "1 unknown message(s)" in listed
    with running_sink(stack.smtp_port) as sink:
        assert f"queued 1 message(s) to send again: {message.id}" in stack.tripmail(
            "messages", "resend", str(message.id)
        )
        assert wait_until(lambda: workspace_messages_settled(stack.db, tenant.key, 1), what="the resent message") == {
            "sent": 1
        }
        assert len(sink.to(email)) == 1


@pytest.mark.timeout(300)
def test_mail_held_while_the_smtp_server_is_down_goes_out_once_it_is_up(stack: OwnStack) -> None:
    tenant = stack.tenant("down")
    emails = [f"{tenant.key}-{index}@example.com" for index in range(20)]
    stack.start_worker()
    stack.start_scheduler()  # it hands the messages that failed to the workers again when they are due
    for email in emails:
        post_reset(stack.api_url, tenant.token, email)

    def each_refused_once() -> bool:
        # Nothing listens on the SMTP port yet: each message's first attempt fails to connect.
        with stack.db() as session:
            tried = session.scalar(select(func.count(func.distinct(MessageAttempt.message_id))))
        return tried == len(emails)

    wait_until(each_refused_once, what="a refused attempt for each message")
    assert statuses(stack.db, tenant.key).get("sent", 0) == 0

    with running_sink(stack.smtp_port) as sink:
        final = wait_until(
            lambda: workspace_messages_settled(stack.db, tenant.key, len(emails)),
            timeout=120,
            what="the backlog drained",
        )
        received = sink.recipients_from(tenant.sender)
    with stack.db() as session:
        first_attempts = session.execute(
            select(MessageAttempt.outcome, MessageAttempt.smtp_reply).order_by(MessageAttempt.id).limit(1)
        ).one()

    assert final == {"sent": len(emails)}
    assert received == dict.fromkeys(emails, 1)
    assert first_attempts.outcome == "transient"
    assert "connecting" in (first_attempts.smtp_reply or "")


@pytest.mark.timeout(300)
def test_a_task_whose_worker_process_is_killed_twice_fails_its_messages_with_the_reason(stack: OwnStack) -> None:
    tenant = stack.tenant("lost")
    email, later = f"{tenant.key}@example.com", f"{tenant.key}-later@example.com"
    with running_sink(stack.smtp_port) as sink:
        worker = stack.start_worker()
        sink.hold_rcpt.set()
        post_reset(stack.api_url, tenant.token, email)
        # As the OOM killer would: the task's process dies mid-send, and the task is back in the queue, twice.
        for tries in (1, 2):
            wait_until(lambda: sink.held == 1, what=f"try {tries} of the task held at RCPT")
            kill_pool(worker)
            wait_until(lambda: sink.held == 0, what=f"the session of try {tries} gone with its process")
        final = wait_until(
            lambda: workspace_messages_settled(stack.db, tenant.key, 1), timeout=120, what="the message given up on"
        )
        sink.hold_rcpt.clear()
        # The worker carries on with other work.
        post_reset(stack.api_url, tenant.token, later)
        wait_until(lambda: sink.to(later, sender=tenant.sender), what="the next email")
        with stack.db() as session:
            message = session.scalars(select(Message).where(Message.to_address == email)).one()
            event = session.get_one(Event, message.event_id)

    assert final == {"failed": 1}
    assert message.smtp_reply == (
        "the worker was lost 2 times while sending this (out of memory?); it is not tried again"
    )
    assert event.status == "processed"
    assert sink.to(email) == []
    assert worker.poll() is None
