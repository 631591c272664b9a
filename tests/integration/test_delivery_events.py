"""Delivery events through the whole stack: endpoints registered over HTTP (and the CLI), mail sent by the worker
to the SMTP sink, the events posted by the scheduler's hand-outs to a receiver on loopback, signed as Standard
Webhooks and checked with that library's verifier."""

from functools import partial
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks import Webhook

from tests.support.builders import Tenant
from tests.support.event_posts import post
from tests.support.message_states import message_of_event_settled
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink
from tests.support.stack import run_tripmail
from tests.support.webhook_endpoints import register, rows_of, webhook_headers
from tests.support.webhook_receiver import Receiver
from tripmail.config import Settings
from tripmail.models import WebhookDelivery


def all_posted(db: sessionmaker[Session], endpoint_id: int, count: int) -> list[WebhookDelivery] | None:
    rows = rows_of(db, endpoint_id)
    return rows if len(rows) == count and all(row.status == "sent" for row in rows) else None


def verified(receiver: Receiver, secret: str) -> list[dict[str, Any]]:
    """Each body the receiver got, after Standard Webhooks' verifier accepted its signature."""
    return [Webhook(secret).verify(body, headers) for headers, body in receiver.received]


def test_sent_failed_and_suppressed_arrive_signed_once_each(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    good, rejected = f"ann-{tenant.key}@example.com", f"reject-{tenant.key}@example.com"
    with Receiver.running([200]) as receiver:
        endpoint = register(api_url, webhook_headers(db, tenant), receiver.url)
        assert endpoint["secret"].startswith("whsec_")
        first = [post(api_url, tenant, email).json()["id"] for email in (good, rejected)]
        for event_id in first:
            wait_until(partial(message_of_event_settled, db, event_id), what="the first two messages settled")
        again = post(api_url, tenant, rejected).json()["id"]
        suppressed = wait_until(
            lambda: message_of_event_settled(db, again), what="the message to the suppressed address"
        )
        rows = wait_until(lambda: all_posted(db, endpoint["id"], 3), what="three delivery events posted")
        events = verified(receiver, endpoint["secret"])

    assert suppressed.status == "suppressed"
    assert len(receiver.received) == 3 and [row.attempts for row in rows] == [1, 1, 1]
    assert sorted((event["type"], event["data"]["to"], event["data"]["status"]) for event in events) == [
        ("message.failed", rejected, "failed"),
        ("message.sent", good, "sent"),
        ("message.suppressed", rejected, "suppressed"),
    ]
    by_type = {event["type"]: event["data"] for event in events}
    assert by_type["message.sent"]["smtp_code"] == 250 and by_type["message.sent"]["workspace"] == tenant.key
    assert by_type["message.failed"]["smtp_code"] == 550 and "5.1.1" in by_type["message.failed"]["smtp_reply"]
    assert by_type["message.suppressed"]["event_id"] == again
    assert by_type["message.sent"]["message_id_header"].startswith(f"<{first[0]}.")
    # What happened to the mail, never the mail: no subject, link or body reaches the receiver.
    for _, body in receiver.received:
        assert b"Reset" not in body and b"forgot_password_link" not in body


def test_a_receiver_failing_twice_gets_the_same_webhook_id_three_times(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    with Receiver.running([500, 500, 200]) as receiver:
        endpoint = register(api_url, webhook_headers(db, tenant), receiver.url, ["message.sent"])
        assert post(api_url, tenant, f"ann-{tenant.key}@example.com").status_code == 202
        [row] = wait_until(lambda: all_posted(db, endpoint["id"], 1), what="the delivery event posted at last")
        events = verified(receiver, endpoint["secret"])

    assert (row.attempts, row.last_code) == (3, 200)
    assert [headers["webhook-id"] for headers, _ in receiver.received] == [row.webhook_id] * 3
    assert [event["type"] for event in events] == ["message.sent"] * 3
    assert len({body for _, body in receiver.received}) == 1


def test_an_endpoint_gets_only_its_types_of_only_its_workspaces_messages(
    api_url: str, tenant: Tenant, other_tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    rejected = f"reject-{tenant.key}@example.com"
    with Receiver.running([200]) as failures, Receiver.running([200]) as theirs:
        mine = register(api_url, webhook_headers(db, tenant), failures.url, ["message.failed"])
        other = register(api_url, webhook_headers(db, other_tenant), theirs.url)
        sent_here = post(api_url, tenant, f"ann-{tenant.key}@example.com").json()["id"]
        post(api_url, tenant, rejected)
        sent_there = post(api_url, other_tenant, f"bob-{other_tenant.key}@example.com", event="ONLY_OTHER")
        assert sent_there.status_code == 202, sent_there.text
        wait_until(lambda: all_posted(db, other["id"], 1), what="the other workspace's event posted")
        wait_until(lambda: all_posted(db, mine["id"], 1), what="the failure posted")
        # Its status committed with any event it made: none for a failures-only endpoint.
        assert wait_until(lambda: message_of_event_settled(db, sent_here), what="the sent message").status == "sent"
        assert len(rows_of(db, mine["id"])) == 1
        mine_events = verified(failures, mine["secret"])
        their_events = verified(theirs, other["secret"])

    assert [(event["type"], event["data"]["to"]) for event in mine_events] == [("message.failed", rejected)]
    assert [(event["type"], event["data"]["workspace"]) for event in their_events] == [
        ("message.sent", other_tenant.key)
    ]


def test_endpoints_over_http_show_the_secret_once_and_refuse_what_is_wrong(
    api_url: str, tenant: Tenant, db: sessionmaker[Session]
) -> None:
    headers = webhook_headers(db, tenant)
    url = f"{api_url}/v1/webhook-endpoints"
    created = httpx.post(url, json={"url": "https://hooks.example/in", "enabled": False}, headers=headers, timeout=10)
    assert created.status_code == 201, created.text
    shown = created.json()
    assert shown.keys() == {"id", "url", "event_types", "enabled", "created_at", "secret"}
    assert (shown["event_types"][0], len(shown["event_types"]), shown["enabled"]) == ("message.sent", 6, False)

    listed = httpx.get(url, headers=headers, timeout=10)
    assert listed.status_code == 200
    assert listed.json() == {"items": [{key: value for key, value in shown.items() if key != "secret"}]}
    assert shown["secret"] not in listed.text

    for body, field in [
        ({"url": "ftp://hooks.example"}, "url"),
        ({"url": "https://a.example", "event_types": []}, "event_types"),
        ({"url": "https://a.example", "event_types": ["message.opened"]}, "event_types.0"),
    ]:
        refused = httpx.post(url, json=body, headers=headers, timeout=10)
        assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["field"] == field, refused.text
    reader_only = {"Authorization": f"Bearer {tenant.token}"}
    assert httpx.get(url, headers=reader_only, timeout=10).status_code == 403

    assert httpx.delete(f"{url}/{shown['id']}", headers=headers, timeout=10).status_code == 204
    gone = httpx.delete(f"{url}/{shown['id']}", headers=headers, timeout=10)
    assert gone.status_code == 404 and gone.json()["field"] == "endpoint_id"
    assert httpx.get(url, headers=headers, timeout=10).json() == {"items": []}


def test_webhooks_add_list_and_remove_from_the_cli(stack_settings: Settings, tenant: Tenant) -> None:
    added = run_tripmail(
        stack_settings,
        "webhooks",
        "add",
        "--workspace",
        tenant.key,
        "--events",
        "message.failed",
        "https://h.example/x",
    )
    assert added.returncode == 0, added.stderr
    *said, secret = added.stdout.strip().splitlines()
    assert said[0].startswith("webhook endpoint ") and "https://h.example/x receives message.failed;" in said[0]
    assert secret.startswith("whsec_")
    endpoint_id = said[0].split()[2]

    listed = run_tripmail(stack_settings, "webhooks", "list", "--workspace", tenant.key)
    lines = listed.stdout.strip().splitlines()
    assert lines[0].startswith(f"{endpoint_id}  https://h.example/x  message.failed  enabled  created ")
    assert lines[-1] == f"1 webhook endpoint(s) of workspace {tenant.key}"
    assert secret not in listed.stdout

    unknown = run_tripmail(stack_settings, "webhooks", "remove", "--workspace", tenant.key, endpoint_id, "999999")
    assert unknown.returncode == 1 and "no webhook endpoint 999999" in unknown.stderr
    refused = run_tripmail(
        stack_settings, "webhooks", "add", "--workspace", tenant.key, "--events", "opened", "https://x.y"
    )
    assert refused.returncode == 1 and "unknown event type(s) opened" in refused.stderr

    removed = run_tripmail(stack_settings, "webhooks", "remove", "--workspace", tenant.key, endpoint_id)
    assert removed.stdout.strip() == f"removed webhook endpoint {endpoint_id} of workspace {tenant.key}"
    after = run_tripmail(stack_settings, "webhooks", "list", "--workspace", tenant.key)
    assert after.stdout.strip() == f"0 webhook endpoint(s) of workspace {tenant.key}"
