"""Where webhooks go, through the running stack, whose TRIPMAIL_WEBHOOK_ALLOW_NETWORKS lets 127.0.0.2 by and no
other loopback address: 127.0.0.1 and localhost are refused when connecting, for automations' webhook steps and
delivery event endpoints alike, and never reached; the api refuses an endpoint whose host is such an address; the
allowed address is posted to, and the event history shows its answer's status, never its body; the worker's log
never shows a webhook URL."""

import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import Tenant, make_tenant, unique_workspace_key
from tests.support.event_posts import post
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink
from tests.support.webhook_endpoints import register, rows_of, webhook_headers
from tests.support.webhook_receiver import Receiver

REFUSED = "is not public (loopback); see TRIPMAIL_WEBHOOK_ALLOW_NETWORKS"


def hooked(db: sessionmaker[Session], urls: list[str]) -> Tenant:
    """A workspace whose automation posts each event to each of `urls` in turn, and a token that triggers events
    and reads their history."""
    key = unique_workspace_key("hooks")
    spec = {
        "workspace": key,
        "automations": [
            {"name": "Hooks", "trigger": "order_paid", "steps": [{"webhook": {"url": url}} for url in urls]}
        ],
    }
    return make_tenant(db, spec, ["events:write", "events:read", "contacts:read"])


def order_paid(api_url: str, shop: Tenant) -> str:
    response = httpx.post(
        f"{api_url}/v1/events",
        json={"event": "order_paid", "contact": {"email": f"{shop.key}@example.com"}},
        headers={"Authorization": f"Bearer {shop.token}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def history(api_url: str, shop: Tenant, event_id: str) -> httpx.Response:
    return httpx.get(f"{api_url}/v1/events/{event_id}", headers={"Authorization": f"Bearer {shop.token}"}, timeout=10)


def webhooks_done(api_url: str, shop: Tenant, event_id: str, count: int) -> list[dict[str, Any]] | None:
    """The event's webhooks as GET /v1/events/{id} shows them, once there are `count` and none waits to be posted."""
    response = history(api_url, shop, event_id)
    if response.status_code != 200:
        return None
    webhooks: list[dict[str, Any]] = response.json()["webhooks"]
    done = len(webhooks) == count and all(hook["status"] in ("sent", "failed") for hook in webhooks)
    return webhooks if done else None


def test_a_step_to_loopback_outside_the_allow_list_is_refused_when_connecting_and_never_posted(
    api_url: str, db: sessionmaker[Session], workers: list[str]
) -> None:
    with Receiver.running([200], host="127.0.0.1") as receiver:
        shop = hooked(db, [receiver.url, f"http://localhost:{receiver.port}/hook"])
        event_id = order_paid(api_url, shop)
        by_address, by_name = wait_until(lambda: webhooks_done(api_url, shop, event_id, 2), what="both refused")

    assert receiver.received == []
    # Failed at the first attempt: connecting again would be refused again.
    assert [(hook["status"], hook["attempts"], hook["last_code"]) for hook in (by_address, by_name)] == [
        ("failed", 1, None),
        ("failed", 1, None),
    ]
    assert by_address["last_error"] == f"webhook address 127.0.0.1 {REFUSED}"
    assert by_name["last_error"].endswith(f" of localhost {REFUSED}")


def test_the_allowed_address_is_posted_to_and_only_its_status_is_kept_and_its_url_is_not_logged(
    api_url: str, db: sessionmaker[Session], workers: list[str], workdir: Path
) -> None:
    query_secret = f"key={uuid.uuid4().hex}"
    answer = f"Traceback: cannot reach db at 10.0.0.5 as admin {uuid.uuid4().hex}".encode()
    with Receiver.running([404], answer=answer) as receiver:
        shop = hooked(db, [f"{receiver.url}?{query_secret}"])
        event_id = order_paid(api_url, shop)
        [hook] = wait_until(lambda: webhooks_done(api_url, shop, event_id, 1), what="the webhook posted")

    assert len(receiver.received) == 1
    assert (hook["status"], hook["attempts"], hook["last_code"], hook["last_error"]) == (
        "failed",
        1,
        404,
        "404 Not Found",
    )
    shown = history(api_url, shop, event_id).text
    assert answer.decode() not in shown and "Traceback" not in shown
    # The URL is the workspace's own to see, not the worker log's: httpx logs each request's URL at INFO.
    logs = "".join((workdir / f"{name}.log").read_text(errors="replace") for name in workers)
    assert query_secret not in logs


def test_the_api_refuses_an_endpoint_at_a_loopback_address(
    api_url: str, tenant: Tenant, db: sessionmaker[Session]
) -> None:
    headers = webhook_headers(db, tenant)
    for url in ("http://127.0.0.1:8080/hook", "http://[::1]/hook", "http://127.1/", "http://2130706433/"):
        refused = httpx.post(f"{api_url}/v1/webhook-endpoints", json={"url": url}, headers=headers, timeout=10)
        assert refused.status_code == 422, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["field"] == "url"
        assert "is not public (loopback)" in problem["detail"]
        assert "TRIPMAIL_WEBHOOK_ALLOW_NETWORKS" in problem["detail"]
    assert httpx.get(f"{api_url}/v1/webhook-endpoints", headers=headers, timeout=10).json() == {"items": []}


def test_an_endpoint_whose_name_resolves_to_loopback_is_refused_when_connecting(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    with Receiver.running([200], host="127.0.0.1") as receiver:
        # A name passes the api, which does not resolve it: connecting is where it is checked.
        endpoint = register(
            api_url, webhook_headers(db, tenant), f"http://localhost:{receiver.port}/hook", ["message.sent"]
        )
        assert post(api_url, tenant, f"ann-{tenant.key}@example.com").status_code == 202
        [row] = wait_until(
            lambda: [r for r in rows_of(db, endpoint["id"]) if r.status in ("sent", "failed")] or None,
            what="the delivery event tried",
        )

    assert receiver.received == []
    assert (row.status, row.attempts, row.last_code) == ("failed", 1, None)
    assert row.last_error is not None and row.last_error.endswith(f" of localhost {REFUSED}")
