"""GET /metrics through the real api: the counters move with the events it answers, and the queue and the messages
read as they are."""

import asyncio
import time
from pathlib import Path

import httpx
import pytest

from tests.support.builders import Tenant, apply_spec, make_token, password_reset_spec, unique_workspace_key
from tests.support.metrics import events, scrape
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.smtp_sink import Sink, running_sink
from tests.support.stack import OwnStack, service_env, start_server, stop
from tripmail.config import Settings
from tripmail.db import make_sessionmaker


def test_counters_move_with_the_events_answered(api_url: str, tenant: Tenant, sink: Sink) -> None:
    before = scrape(api_url)
    email = f"{tenant.key}@example.com"
    body = {"event": "FORGOT_PASSWORD", "key": f"{tenant.key}-once", "contact": {"email": email}}
    headers = {"Authorization": f"Bearer {tenant.token}"}
    for _ in range(2):
        assert httpx.post(f"{api_url}/v1/events", json=body, headers=headers, timeout=10).status_code == 202
    # Refused before the intake reads them: a body that does not parse, a token that does not match.
    malformed = {"event": "FORGOT_PASSWORD", "contact": {}}
    assert httpx.post(f"{api_url}/v1/events", json=malformed, headers=headers, timeout=10).status_code == 422
    stranger = {"email": email, "identifier": "FORGOT_PASSWORD"}
    wrong_token = {"Authorization": "tm_live_not-a-token"}
    refused = httpx.post(f"{api_url}/compat/cocomail/events/trigger", json=stranger, headers=wrong_token, timeout=10)
    assert refused.status_code == 401
    wait_until(lambda: sink.to(email, sender=tenant.sender) or None, what="the email")

    after = wait_until(
        lambda: s if (s := scrape(api_url)).get(("tripmail_messages", (("status", "sent"),)), 0) > 0 else None,
        what="a sent message counted",
    )
    assert events(after, "accepted") - events(before, "accepted") == 1
    assert events(after, "duplicate") - events(before, "duplicate") == 1
    assert events(after, "invalid-request") - events(before, "invalid-request") == 1
    unauthenticated = events(after, "unauthenticated", "cocomail") - events(before, "unauthenticated", "cocomail")
    assert unauthenticated == 1
    assert {labels for name, labels in after if name == "tripmail_queue_depth"} == {
        (("queue", "transactional"),),
        (("queue", "bulk"),),
    }
    # The workers' metrics are theirs: the api, which never sends, does not show them at zero.
    assert not [
        name for name, _ in after if name.startswith(("tripmail_deliveries", "tripmail_retries", "tripmail_smtp"))
    ]


FAST_LANE = (("queue", "transactional"),)
BULK = (("queue", "bulk"),)


def test_each_queue_shows_its_depth_and_how_long_its_oldest_task_has_waited(stack: OwnStack) -> None:
    tenant = stack.tenant("queue")
    headers = {"Authorization": f"Bearer {tenant.token}"}
    body = {"event": "FORGOT_PASSWORD", "contact": {"email": f"{tenant.key}@example.com"}}
    assert httpx.post(f"{stack.api_url}/v1/events", json=body, headers=headers, timeout=10).status_code == 202

    # No worker yet: the password reset's task waits in the fast lane, and its wait grows; the bulk lane is empty.
    first = scrape(stack.api_url)
    time.sleep(1.2)
    second = scrape(stack.api_url)
    assert first[("tripmail_queue_depth", FAST_LANE)] == second[("tripmail_queue_depth", FAST_LANE)] == 1
    assert second[("tripmail_queue_depth", BULK)] == 0
    waited = second[("tripmail_queue_oldest_age_seconds", FAST_LANE)]
    assert waited >= first[("tripmail_queue_oldest_age_seconds", FAST_LANE)] + 1.0
    assert second[("tripmail_queue_oldest_age_seconds", BULK)] == 0

    stack.start_worker()
    drained = wait_until(
        lambda: s if (s := scrape(stack.api_url))[("tripmail_queue_depth", FAST_LANE)] == 0 else None,
        what="queue drained",
    )
    assert drained[("tripmail_queue_oldest_age_seconds", FAST_LANE)] == 0


def test_a_worker_serves_its_processes_metrics_summed(stack: OwnStack) -> None:
    port = free_port()
    stack.settings = stack.settings.model_copy(update={"worker_metrics_port": port})
    tenant = stack.tenant("worker-metrics")
    emails = [f"{tenant.key}-{index}@example.com" for index in range(3)]
    with running_sink(stack.smtp_port) as sink:
        stack.start_worker()
        for email in emails:
            body = {"event": "FORGOT_PASSWORD", "contact": {"email": email}}
            headers = {"Authorization": f"Bearer {tenant.token}"}
            assert httpx.post(f"{stack.api_url}/v1/events", json=body, headers=headers, timeout=10).status_code == 202
        wait_until(lambda: all(sink.to(email) for email in emails) or None, what="the three emails")
        worker_url = f"http://127.0.0.1:{port}"
        scraped = wait_until(
            lambda: (
                s if (s := scrape(worker_url)).get(("tripmail_deliveries_total", (("outcome", "sent"),))) == 3 else None
            ),
            what="three deliveries counted",
        )
    assert scraped[("tripmail_smtp_send_seconds_count", ())] == 3
    assert scraped[("tripmail_smtp_send_seconds_sum", ())] > 0


def test_an_api_of_several_processes_counts_every_event_whichever_process_is_scraped(
    own_settings: Settings, tmp_path: Path
) -> None:
    key = unique_workspace_key("processes")
    with make_sessionmaker(own_settings).begin() as session:
        apply_spec(session, password_reset_spec(key))
        token = make_token(session, key)
    api, api_url = start_server(
        ["api", "--workers", "2"], service_env(own_settings), tmp_path / "api.log", probe="/healthz", status=200
    )
    try:

        async def post_each_on_a_connection_of_its_own() -> set[int]:
            async def post(index: int) -> int:
                body = {"event": "FORGOT_PASSWORD", "contact": {"email": f"{key}-{index}@example.com"}}
                async with httpx.AsyncClient(timeout=30) as client:
                    response = await client.post(
                        f"{api_url}/v1/events", json=body, headers={"Authorization": f"Bearer {token}"}
                    )
                return response.status_code

            return set(await asyncio.gather(*(post(index) for index in range(40))))

        assert asyncio.run(post_each_on_a_connection_of_its_own()) == {202}
        # Each scrape is answered by one of the two processes, each of which answered some of the events.
        assert {events(scrape(api_url), "accepted") for _ in range(6)} == {40}
    finally:
        stop(api)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_with_a_metrics_port_the_api_serves_its_metrics_there_and_not_on_its_own_port(
    own_settings: Settings, tmp_path: Path, workers: str
) -> None:
    metrics_url = f"http://127.0.0.1:{(metrics_port := free_port())}"
    settings = own_settings.model_copy(update={"metrics_port": metrics_port})
    key = unique_workspace_key("metrics-port")
    with make_sessionmaker(settings).begin() as session:
        apply_spec(session, password_reset_spec(key))
        token = make_token(session, key)
    api, api_url = start_server(
        ["api", "--workers", workers], service_env(settings), tmp_path / "api.log", probe="/healthz", status=200
    )
    try:
        for index in range(6):
            body = {"event": "FORGOT_PASSWORD", "contact": {"email": f"{key}-{index}@example.com"}}
            # A connection each: with two processes, either may answer each.
            answer = httpx.post(f"{api_url}/v1/events", json=body, headers={"Authorization": f"Bearer {token}"})
            assert answer.status_code == 202, answer.text
        on_api_port = httpx.get(f"{api_url}/metrics", timeout=10)
        scraped = scrape(metrics_url)
    finally:
        stop(api)
    assert on_api_port.status_code == 404
    assert on_api_port.headers["content-type"] == "application/problem+json"
    # The same metrics the api's port serves without the setting: the events counted (by every process) and the
    # queue read when scraped; no worker runs, so the six events' tasks wait in the fast lane.
    assert events(scraped, "accepted") == 6
    assert scraped[("tripmail_queue_depth", FAST_LANE)] >= 1
