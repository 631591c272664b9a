"""The fast lane through real processes: a password reset is not queued behind a marketing fan-out, and each worker
takes only the lanes it was started on (`tripmail worker --queues`)."""

from datetime import UTC, datetime

import httpx
from sqlalchemy import insert

from tests.support.builders import (
    contact_row,
    make_automation,
    make_template,
    make_token,
    make_workspace,
    sender_of,
    unique_workspace_key,
)
from tests.support.metrics import scrape
from tests.support.polling import wait_until
from tests.support.smtp_sink import running_sink
from tests.support.stack import OwnStack
from tripmail.models import Contact

CAMPAIGN = 3_100_001
# Enough messages that the bulk worker is busy with them for a while: 16 delivery tasks of 250.
AUDIENCE = 4000


def set_up(stack: OwnStack, prefix: str, audience: int = 0) -> tuple[str, str]:
    """A workspace with a transactional password reset (FORGOT_PASSWORD), a marketing newsletter (NEWSLETTER) and a
    marketing campaign to `audience` contacts; its key and a token."""
    key = unique_workspace_key(prefix)
    template = make_template("hello", "Hello", "Hello {{ contact.email }}")
    spec = {
        "workspace": key,
        "from": f"Acme <{sender_of(key)}>",
        "contact_fields": [{"name": "rank", "type": "number"}],
        "event_types": [{"key": "FORGOT_PASSWORD", "name": "Forgot password"}, {"key": "NEWSLETTER", "name": "News"}],
        "templates": [template],
        "automations": [
            {
                "name": "Reset",
                "trigger": "FORGOT_PASSWORD",
                "transactional": True,
                "steps": [{"send_email": {"template": "hello"}}],
            },
            make_automation("News", "hello", trigger="NEWSLETTER"),
            make_automation("Campaign", "hello", id=CAMPAIGN),
        ],
    }
    now = datetime.now(UTC)
    with stack.db.begin() as session:
        workspace_id = make_workspace(session, spec)
        token = make_token(session, key)
        rows = [
            contact_row(workspace_id, f"{key}-{i:05}", f"{key}-{i}@example.com", {"rank": i}, now)
            for i in range(audience)
        ]
        if rows:
            session.execute(insert(Contact), rows)
    return key, token


def post(stack: OwnStack, token: str, event: str, email: str) -> str:
    body = {"event": event, "contact": {"email": email}}
    response = httpx.post(
        f"{stack.api_url}/v1/events", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_a_password_reset_is_sent_while_a_marketing_fan_out_queued_before_it_is_still_pending(
    stack: OwnStack,
) -> None:
    key, token = set_up(stack, "overtake", AUDIENCE)
    sender = sender_of(key)
    reset_to = f"reset-{key}@example.com"
    with running_sink(stack.smtp_port) as sink:
        stack.start_worker("fast", queues="transactional")
        stack.start_worker("bulk", queues="bulk")
        # The contacts ranked: not the one the reset creates meanwhile.
        start = {"token": token, "id": CAMPAIGN, "custom_request": {"rank": {"$gte": 0}}}
        answer = httpx.post(
            f"{stack.api_url}/compat/altcraft/api/v1.1/campaigns/triggers/start/", json=start, timeout=60
        )
        assert answer.json()["error"] == 0, answer.text
        wait_until(lambda: sink.count_from(sender) > 0, timeout=120, what="the campaign's first emails")

        reset_id = post(stack, token, "FORGOT_PASSWORD", reset_to)
        wait_until(lambda: sink.to(reset_to), timeout=60, what="the password reset")
        campaign_sent_before_the_reset = sink.count_from(sender) - 1

        wait_until(lambda: sink.count_from(sender) >= AUDIENCE + 1, timeout=240, what="the whole campaign")
        received = sink.recipients_from(sender)

    assert campaign_sent_before_the_reset < AUDIENCE // 2
    assert len(received) == AUDIENCE + 1 and set(received.values()) == {1}
    # The fast-lane worker recorded and sent the reset, and nothing of the campaign; the bulk worker no reset.
    fast_log = (stack.workdir / "fast.log").read_text()
    bulk_log = (stack.workdir / "bulk.log").read_text()
    assert reset_id in fast_log and reset_id not in bulk_log
    assert fast_log.count("delivered batch: ") == 1


def test_a_worker_on_the_bulk_lane_leaves_a_password_reset_to_the_fast_lane(stack: OwnStack) -> None:
    key, token = set_up(stack, "bulk-only")
    reset_to, news_to = f"reset-{key}@example.com", f"news-{key}@example.com"
    with running_sink(stack.smtp_port) as sink:
        stack.start_worker("bulk", queues="bulk")
        post(stack, token, "FORGOT_PASSWORD", reset_to)
        post(stack, token, "NEWSLETTER", news_to)
        # The newsletter, posted after the reset, has been sent: the bulk worker runs, and has left the reset.
        wait_until(lambda: sink.to(news_to), what="the newsletter")
        assert sink.to(reset_to) == []
        queues = scrape(stack.api_url)
        assert queues[("tripmail_queue_depth", (("queue", "transactional"),))] == 1
        assert queues[("tripmail_queue_depth", (("queue", "bulk"),))] == 0

        stack.start_worker("fast", queues="transactional")
        wait_until(lambda: sink.to(reset_to), what="the password reset, once a worker serves the fast lane")
    assert len(sink.to(reset_to)) == 1
