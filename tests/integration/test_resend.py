"""`tripmail messages resend`: an operator sends failed and unknown messages again, never sent ones, never to a
suppressed address."""

import re

import pytest
from sqlalchemy import select

from tests.support.event_posts import post_reset
from tests.support.message_states import workspace_messages_settled
from tests.support.polling import wait_until
from tests.support.smtp_sink import running_sink
from tests.support.stack import OwnStack
from tripmail.config import Settings
from tripmail.models import Message


@pytest.fixture
def own_settings(own_settings: Settings) -> Settings:
    """Tries end 3 s after the first failure, so an outage of seconds fails the messages for good."""
    return own_settings.model_copy(update={"send_retry_schedule": "1s", "send_give_up_after": 3})


@pytest.mark.timeout(180)
def test_messages_that_failed_through_an_outage_are_sent_once_by_resend_status_failed(stack: OwnStack) -> None:
    tenant = stack.tenant("resend")
    emails = [f"{tenant.key}-{index}@example.com" for index in range(12)]
    bounced = f"reject-{tenant.key}@example.com"
    stack.start_worker()
    stack.start_scheduler()

    with running_sink(stack.smtp_port) as sink:
        post_reset(stack.api_url, tenant.token, emails[0])
        post_reset(stack.api_url, tenant.token, bounced)  # 550 5.1.1: failed, and its address suppressed
        wait_until(lambda: workspace_messages_settled(stack.db, tenant.key, 2), what="the first two settled")
        assert len(sink.to(emails[0])) == 1
    # The relay is down past the give-up time: the rest fail, after a few tries.
    for email in emails[1:]:
        post_reset(stack.api_url, tenant.token, email)
    final = wait_until(
        lambda: workspace_messages_settled(stack.db, tenant.key, len(emails) + 1), timeout=60, what="the rest failed"
    )
    assert final == {"sent": 1, "failed": len(emails)}
    with stack.db() as session:
        rows = session.execute(select(Message.id, Message.to_address, Message.attempts, Message.smtp_reply)).all()
    by_address = {row.to_address: row for row in rows}
    gave_up = by_address[emails[1]]
    assert gave_up.attempts >= 2
    assert gave_up.smtp_reply.startswith(f"gave up after {gave_up.attempts} attempt(s)")
    assert "connecting" in gave_up.smtp_reply

    # By id: a sent message is refused, whatever the operator asks.
    sent_id = by_address[emails[0]].id
    assert "not unknown or failed (a sent one is never sent again), left as they are: " + str(sent_id) in (
        stack.tripmail("messages", "resend", str(sent_id))
    )
    with running_sink(stack.smtp_port) as sink:
        output = stack.tripmail("messages", "resend", "--status", "failed", "--since", "1h")
        assert f"{len(emails)} failed message(s) found" in output
        queued = re.search(r"queued (\d+) message\(s\) to send again", output)
        assert queued is not None and int(queued.group(1)) == len(emails) - 1
        assert (
            f"to a suppressed address, left as they are (remove the suppression first): {by_address[bounced].id}"
            in (output)
        )
        final = wait_until(
            lambda: workspace_messages_settled(stack.db, tenant.key, len(emails) + 1),
            timeout=60,
            what="the resent messages",
        )
        received = sink.recipients_from(tenant.sender)
    assert final == {"sent": len(emails), "failed": 1}
    assert received == dict.fromkeys(emails[1:], 1)

    # Nothing is left to resend: a second run finds no failed message but the suppressed one, and sends nothing.
    again = stack.tripmail("messages", "resend", "--status", "failed", "--since", "1h")
    assert "1 failed message(s) found" in again and "queued 0 message(s)" in again
