"""Scaling out as production does: workers named apart on one Redis and one PostgreSQL share the work, and nothing
is sent twice however they interleave."""

from collections import Counter
from collections.abc import Mapping, Sequence

import httpx
import pytest
from sqlalchemy import func, select

from tests.support.builders import Tenant, follow_up_spec, make_tenant, unique_workspace_key
from tests.support.metrics import scrape
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.smtp_sink import running_sink
from tests.support.stack import OwnStack
from tripmail.models import AutomationRun, Message

on_postgresql = pytest.mark.parametrize("own_settings", ["postgresql"], indirect=True)


def post_batches(stack: OwnStack, tenant: Tenant, events: Sequence[Mapping[str, object]], size: int) -> None:
    for start in range(0, len(events), size):
        batch = events[start : start + size]
        response = httpx.post(
            f"{stack.api_url}/v1/events/batch",
            json={"events": list(batch)},
            headers={"Authorization": f"Bearer {tenant.token}"},
            timeout=60,
        )
        assert response.status_code == 202, response.text
        assert response.json()["accepted"] == len(batch), response.text


def statuses(stack: OwnStack) -> dict[str, int]:
    with stack.db() as session:
        rows = session.execute(select(Message.status, func.count()).group_by(Message.status)).all()
        return dict(rows)


@on_postgresql
def test_two_workers_share_2000_emails_and_each_arrives_once(stack: OwnStack) -> None:
    tenant = stack.tenant("scale")
    emails = [f"{tenant.key}-{index}@example.com" for index in range(2000)]
    metrics_ports = {"w1": free_port(), "w2": free_port()}
    with running_sink(stack.smtp_port) as sink:
        for name, port in metrics_ports.items():
            stack.settings = stack.settings.model_copy(update={"worker_metrics_port": port})
            stack.start_worker(name)
        events = [{"event": "FORGOT_PASSWORD", "contact": {"email": email}, "data": {}} for email in emails]
        # Batches of 100: tasks enough that each worker takes some of both kinds, events and deliveries.
        post_batches(stack, tenant, events, 100)
        wait_until(lambda: statuses(stack) == {"sent": 2000} or None, timeout=240, what="2,000 messages sent")
        assert sink.recipients_from(tenant.sender) == Counter(dict.fromkeys(emails, 1))

    sent_by = {
        name: scrape(f"http://127.0.0.1:{port}").get(("tripmail_deliveries_total", (("outcome", "sent"),)), 0)
        for name, port in metrics_ports.items()
    }
    assert sum(sent_by.values()) == 2000, sent_by
    assert all(sent > 0 for sent in sent_by.values()), sent_by
    for name in metrics_ports:
        assert f"{name}@tests ready." in (stack.workdir / f"{name}.log").read_text()


@on_postgresql
def test_two_schedulers_and_two_workers_wake_each_wait_once(stack: OwnStack) -> None:
    # A second scheduler is harmless (the README says so): both hand out the same runs, and one transaction takes
    # each. 200 contacts through a welcome, a wait and a follow-up: 400 emails, none twice.
    key = unique_workspace_key("waits")
    tenant = make_tenant(stack.db, follow_up_spec(key, wait="2s"))
    emails = [f"{key}-{index}@example.com" for index in range(200)]
    with running_sink(stack.smtp_port) as sink:
        for name in ("w1", "w2"):
            stack.start_worker(name)
        for name in ("scheduler-1", "scheduler-2"):
            stack.start_scheduler(name)
        post_batches(stack, tenant, [{"event": "signed_up", "contact": {"email": email}} for email in emails], 50)

        def runs_completed() -> bool:
            with stack.db() as session:
                states = Counter(session.scalars(select(AutomationRun.status)).all())
            return states == Counter(completed=200)

        wait_until(runs_completed, timeout=120, what="200 runs completed")
        wait_until(lambda: statuses(stack) == {"sent": 400} or None, timeout=60, what="400 messages sent")
        assert sink.recipients_from(tenant.sender) == Counter(dict.fromkeys(emails, 2))
    subjects = Counter(mail.message["Subject"].split(" ")[0] for email in emails for mail in sink.to(email))
    assert subjects == Counter(Welcome=200, Still=200)
