"""A relay down for minutes in the middle of a run: each email waits in the database for its next try (handed out
by the scheduler) and arrives once when the relay is back; nothing is failed, nothing is sent twice."""

import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from tests.support.event_posts import post_reset
from tests.support.message_states import statuses, workspace_messages_settled
from tests.support.polling import wait_until
from tests.support.smtp_sink import running_sink
from tests.support.stack import OwnStack
from tripmail.config import Settings
from tripmail.models import Message, MessageAttempt

OUTAGE_S = 180


@pytest.fixture
def own_settings(own_settings: Settings) -> Settings:
    """The production schedule's shape, shortened: 2 s, 5 s, then every 15 s, rather than 1 min, 5 min, 15 min."""
    return own_settings.model_copy(update={"send_retry_schedule": "2s,5s,15s"})


@pytest.mark.timeout(OUTAGE_S + 240)
def test_a_relay_down_for_three_minutes_mid_run_delivers_every_email_once(stack: OwnStack) -> None:
    tenant = stack.tenant("relaydown")
    before = [f"{tenant.key}-before-{index}@example.com" for index in range(40)]
    during = [f"{tenant.key}-during-{index}@example.com" for index in range(40)]
    stack.start_worker()
    stack.start_scheduler()

    with running_sink(stack.smtp_port) as first_sink:
        for email in before[:10]:
            post_reset(stack.api_url, tenant.token, email)
        wait_until(lambda: first_sink.count_from(tenant.sender) == 10, what="the run under way")
        # The relay goes away with sessions waiting on it before their DATA, so no message is cut mid-DATA (whose
        # fate would be unknown, and rightly never resent).
        first_sink.hold_rcpt.set()
        for email in before[10:]:
            post_reset(stack.api_url, tenant.token, email)
        wait_until(lambda: first_sink.held > 0, what="a session waiting on the relay")
    outage_began = time.monotonic()

    for email in during:
        post_reset(stack.api_url, tenant.token, email)
    wait_until(
        lambda: refused(stack, "-during-") == len(during),
        timeout=60,
        what="a refused attempt of each message sent during the outage",
    )
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - outage_began)))
    waiting = statuses(stack.db, tenant.key)
    assert "failed" not in waiting and "unknown" not in waiting
    assert waiting["pending"] + waiting.get("sending", 0) >= len(during)

    with running_sink(stack.smtp_port) as second_sink:
        final = wait_until(
            lambda: workspace_messages_settled(stack.db, tenant.key, len(before) + len(during)),
            timeout=120,
            what="the backlog drained",
        )
        received = first_sink.recipients_from(tenant.sender) + second_sink.recipients_from(tenant.sender)

    assert final == {"sent": len(before) + len(during)}
    assert received == Counter(dict.fromkeys(before + during, 1))
    with stack.db() as session:
        most_tries = session.scalar(select(func.max(Message.attempts)))
        connecting = session.scalar(
            select(func.count()).where(
                MessageAttempt.outcome == "transient", MessageAttempt.smtp_reply.like("connecting%")
            )
        )
    # Tried again and again through the outage (2 s, 5 s, then every 15 s over 3 minutes), not given up on.
    assert most_tries is not None and most_tries >= 8
    assert connecting is not None and connecting >= len(during) * 8


def refused(stack: OwnStack, part: str) -> int:
    """How many messages to addresses containing `part` have had an attempt that could not reach the relay."""
    with stack.db() as session:
        count = session.scalar(
            select(func.count(func.distinct(MessageAttempt.message_id)))
            .join(Message, Message.id == MessageAttempt.message_id)
            .where(Message.to_address.contains(part), MessageAttempt.smtp_reply.like("connecting%"))
        )
    return int(count or 0)


@pytest.mark.timeout(120)
def test_a_message_waiting_for_its_next_try_is_not_sent_once_its_address_is_suppressed(stack: OwnStack) -> None:
    tenant = stack.tenant("waitsuppressed")
    email = f"{tenant.key}-gone@example.com"
    stack.start_worker()
    stack.start_scheduler()
    post_reset(stack.api_url, tenant.token, email)
    wait_until(lambda: refused(stack, "-gone@") == 1, what="a refused attempt")
    # The recipient asked to be removed, or a bounce came in by another way, while the relay was down.
    assert f"suppressed {email}" in stack.tripmail("suppressions", "add", "--workspace", tenant.key, email)

    with running_sink(stack.smtp_port) as sink:
        final = wait_until(lambda: workspace_messages_settled(stack.db, tenant.key, 1), what="the message settled")
        time.sleep(1)  # a second more for anything that would still go out
        assert sink.to(email) == []
    assert final == {"suppressed": 1}
