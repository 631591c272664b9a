"""Automation runs through real processes: durable waits woken by `tripmail scheduler`, across restarts and
pauses, and webhooks retried. Each test runs a stack of its own, so it can kill and start the worker and the
scheduler."""

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import update

from tests.support.builders import follow_up_spec, make_template, make_tenant, unique_workspace_key
from tests.support.polling import wait_until
from tests.support.smtp_sink import running_sink
from tests.support.stack import OwnStack, kill_group
from tests.support.webhook_receiver import Receiver
from tripmail.models import AutomationRun, WebhookDelivery
from tripmail.webhooks.deliveries import signature


def sign_up(stack: OwnStack, token: str, email: str) -> None:
    response = httpx.post(
        f"{stack.api_url}/v1/events",
        json={"event": "signed_up", "contact": {"email": email}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert response.status_code == 202, response.text


def run_status(stack: OwnStack) -> str | None:
    with stack.db() as session:
        run = session.query(AutomationRun).one_or_none()
        return None if run is None else run.status


def test_a_wait_survives_a_scheduler_and_worker_restart_and_sends_once(stack: OwnStack) -> None:
    key = unique_workspace_key("wait")
    token = make_tenant(stack.db, follow_up_spec(key)).token
    email = f"{key}@example.com"
    with running_sink(stack.smtp_port) as sink:
        worker, scheduler = stack.start_worker("worker-1"), stack.start_scheduler("scheduler-1")
        sign_up(stack, token, email)
        wait_until(lambda: sink.to(email) or None, what="the welcome")
        assert run_status(stack) == "waiting"
        kill_group(worker)
        kill_group(scheduler)
        time.sleep(2.5)  # the wait ends while nothing runs
        assert len(sink.to(email)) == 1
        stack.start_worker("worker-2")
        stack.start_scheduler("scheduler-2")
        mails = wait_until(lambda: m if len(m := sink.to(email)) == 2 else None, what="the follow-up")
        wait_until(lambda: run_status(stack) == "completed" or None, what="the run completed")
        time.sleep(1.5)  # a second hand-over of the run would have sent again by now
        mails = sink.to(email)
    assert [mail.message["Subject"] for mail in mails] == [f"Welcome {email}", f"Still there, {email}?"]


def test_a_paused_automation_holds_its_waiting_run_and_resuming_sends_it(stack: OwnStack) -> None:
    key = unique_workspace_key("pause")
    # The wait ends only when the test says so (below), however long `tripmail apply` takes on a loaded machine.
    wait = "1h"
    token = make_tenant(stack.db, follow_up_spec(key, wait=wait)).token
    email = f"{key}@example.com"
    with running_sink(stack.smtp_port) as sink:
        stack.start_worker()
        stack.start_scheduler()
        sign_up(stack, token, email)
        wait_until(lambda: sink.to(email) or None, what="the welcome")
        stack.apply(follow_up_spec(key, status="paused", wait=wait))
        assert run_status(stack) == "waiting"
        with stack.db.begin() as session:
            session.execute(update(AutomationRun).values(wake_at=datetime.now(UTC) - timedelta(seconds=1)))
        time.sleep(3 * stack.settings.scheduler_interval_s + 1)  # a few scheduler passes over the ended wait: held
        assert len(sink.to(email)) == 1
        assert run_status(stack) == "waiting"
        stack.apply(follow_up_spec(key, wait=wait))
        mails = wait_until(lambda: m if len(m := sink.to(email)) == 2 else None, what="the follow-up after resuming")
    assert mails[1].message["Subject"] == f"Still there, {email}?"


def test_a_webhook_is_retried_after_a_500_and_arrives_signed(stack: OwnStack) -> None:
    key = unique_workspace_key("hook")
    secret = "a-receiver-shared-secret"
    with Receiver.running([500, 200]) as receiver, running_sink(stack.smtp_port):
        spec = {
            "workspace": key,
            "templates": [make_template("t", "s", "t")],
            "automations": [
                {
                    "name": "Hook",
                    "trigger": "signed_up",
                    "steps": [{"webhook": {"url": receiver.url, "secret": secret}}],
                }
            ],
        }
        token = make_tenant(stack.db, spec).token
        stack.start_worker()
        stack.start_scheduler()
        response = httpx.post(
            f"{stack.api_url}/v1/events",
            json={"event": "signed_up", "contact": {"email": f"{key}@example.com"}, "custom_data": {"plan": "pro"}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        wait_until(lambda: len(receiver.received) == 2 or None, what="the webhook posted twice")
        with stack.db() as session:
            delivery = wait_until(
                lambda: d if (d := session.query(WebhookDelivery).one()).status == "sent" else None,
                what="the delivery recorded as sent",
            )
    assert (delivery.attempts, delivery.last_code) == (2, 200)
    headers, body = receiver.received[1]
    assert headers["X-Tripmail-Signature"] == signature(secret, int(headers["X-Tripmail-Timestamp"]), body.decode())
    assert json.loads(body)["custom_data"] == {"plan": "pro"}
