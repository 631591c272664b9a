"""GET /v1/events and GET /v1/events/{id} through the real stack: what an event led to, as recorded."""

from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import Tenant, make_automation, make_template, make_tenant, make_token, workspace_spec
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink


@pytest.fixture
def shop(db: sessionmaker[Session]) -> Tenant:
    spec = workspace_spec(
        "history",
        templates=[make_template("vip", "VIP", "vip"), make_template("thanks", "Thanks", "thanks")],
        automations=[
            make_automation(
                "Purchase",
                {
                    "condition": {
                        "if": "data.amount > 100",
                        "then": [{"send_email": {"template": "vip"}}],
                        "else": [{"send_email": {"template": "thanks"}}],
                    }
                },
                trigger="purchase_completed",
                transactional=True,
            )
        ],
    )
    return make_tenant(db, spec, ["events:write", "events:read", "contacts:read"])


def get(api_url: str, token: str, path: str, **params: Any) -> httpx.Response:
    return httpx.get(f"{api_url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def purchase(api_url: str, shop: Tenant, email: str, amount: float) -> str:
    body = {"event": "purchase_completed", "contact": {"email": email}, "data": {"amount": amount}}
    response = httpx.post(
        f"{api_url}/v1/events", json=body, headers={"Authorization": f"Bearer {shop.token}"}, timeout=10
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_an_event_shows_its_run_steps_and_its_message(api_url: str, shop: Tenant, sink: Sink) -> None:
    email = f"{shop.key}@example.com"
    small = purchase(api_url, shop, email, 20)
    big = purchase(api_url, shop, email, 500)
    wait_until(lambda: len(sink.to(email, sender=shop.sender)) == 2 or None, what="both emails")

    detail = wait_until(
        lambda: (
            d
            if (d := get(api_url, shop.token, f"/v1/events/{big}").json())["messages"][0]["status"] == "sent"
            else None
        ),
        what="the message recorded as sent",
    )
    assert (detail["id"], detail["name"], detail["status"]) == (big, "purchase_completed", "processed")
    assert detail["body"]["data"] == {"amount": 500}
    [run] = detail["runs"]
    assert (run["automation"], run["status"]) == ("Purchase", "completed")
    assert [(step["kind"], step.get("branch")) for step in run["steps"]] == [
        ("condition", "then"),
        ("send_email", None),
    ]
    [message] = detail["messages"]
    assert (message["template"], message["to"], message["status"]) == ("vip", email, "sent")
    assert [attempt["outcome"] for attempt in message["attempts"]] == ["sent"]
    assert message["attempts"][0]["smtp_code"] == 250

    listed = get(api_url, shop.token, "/v1/events", type="PURCHASE_COMPLETED", contact=detail["contact_id"]).json()
    assert [event["id"] for event in listed["events"]] == [big, small]
    first_page = get(api_url, shop.token, "/v1/events", limit=1).json()
    assert [event["id"] for event in first_page["events"]] == [big]
    second_page = get(api_url, shop.token, "/v1/events", limit=1, before=first_page["next_before"]).json()
    assert ([event["id"] for event in second_page["events"]], second_page["next_before"]) == ([small], None)


def test_history_is_the_workspace_s_own_and_needs_events_read(
    api_url: str, shop: Tenant, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    event_id = purchase(api_url, shop, f"{shop.key}-x@example.com", 5)
    wait_until(lambda: get(api_url, shop.token, f"/v1/events/{event_id}").status_code == 200 or None, what="recorded")
    assert get(api_url, tenant.token, f"/v1/events/{event_id}").status_code == 403  # a token that only writes
    with db.begin() as session:
        other_reader = make_token(session, tenant.key, ["events:read", "contacts:read"])
    assert get(api_url, other_reader, f"/v1/events/{event_id}").status_code == 404
    assert get(api_url, other_reader, "/v1/events").json()["events"] == []
    unknown = get(api_url, shop.token, "/v1/events/01890000-0000-7000-8000-000000000000")
    assert unknown.status_code == 404
    assert get(api_url, shop.token, "/v1/events", status="bogus").status_code == 422
