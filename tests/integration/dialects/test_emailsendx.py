"""emailsendx (seed 004) against the real stack: the seed's whole purchase flow, then every error rule."""

import re

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import (
    Tenant,
    make_automation,
    make_template,
    make_tenant,
    make_token,
    sender_of,
    unique_workspace_key,
    workspace_spec,
)
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink
from tripmail.models import Contact

SEED_EVENT_BODY = """{
  "name": "purchase_completed",
  "data": {
    "orderId": "ord_abc123",
    "amount": 99.00,
    "currency": "USD",
    "items": ["Pro Plan - Annual"],
    "coupon": "LAUNCH20"
  }
}"""


@pytest.fixture
def shop(db: sessionmaker[Session]) -> Tenant:
    """Two active automations on purchase_completed (written in two cases) and one paused one."""
    key = unique_workspace_key("shop")
    automations = [
        make_automation("Receipt", "receipt", trigger="purchase_completed"),
        make_automation("Onboarding", "welcome", trigger="PURCHASE_COMPLETED"),
        {
            "name": "Old",
            "trigger": "purchase_completed",
            "status": "paused",
            "steps": [{"send_email": {"template": "welcome"}}],
        },
    ]
    spec = {
        "workspace": key,
        "from": f"Shop <{sender_of(key)}>",
        "templates": [
            {
                "key": "receipt",
                "subject": "Receipt {{ data.orderId }}",
                "text": "Thanks {{ contact.firstName }}: {{ amount }} {{ currency }} for {{ items | join(', ') }}",
            },
            make_template("welcome", "Welcome to {{ contact.plan }}", "Hi {{ contact.firstName }}"),
        ],
        "automations": automations,
    }
    return make_tenant(db, spec, ["contacts:write", "contacts:read", "events:write"])


def call(api_url: str, token: str, path: str, body: object = None, content: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    url = f"{api_url}/compat/emailsendx/api/v1{path}"
    if content is not None:
        return httpx.post(url, content=content.encode(), headers=headers, timeout=10)
    return httpx.post(url, json=body, headers=headers, timeout=10)


def upsert(api_url: str, token: str, email: str) -> str:
    body = {"email": email, "firstName": "Ann", "metadata": {"plan": "Pro", "customerId": "cus_123"}}
    response = call(api_url, token, "/contacts", body)
    assert response.status_code == 200, response.text
    contact_id: str = response.json()["data"]["id"]
    return contact_id


def test_seed_purchase_flow_runs_as_written(api_url: str, shop: Tenant, sink: Sink) -> None:
    email = f"{unique_workspace_key('buyer')}@example.com"
    upserted = call(api_url, shop.token, "/contacts", {"email": email, "firstName": "Ann", "metadata": {"plan": "Pro"}})
    contact = upserted.json()["data"]
    assert (contact["email"], contact["firstName"], contact["metadata"]) == (email, "Ann", {"plan": "Pro"})

    fired = call(api_url, shop.token, f"/contacts/{contact['id']}/events", content=SEED_EVENT_BODY)

    assert fired.status_code == 200, fired.text
    event = fired.json()["data"]
    assert set(fired.json()) == {"data"}
    assert set(event) == {"contactId", "eventName", "matchingAutomations", "firedAt"}
    assert (event["contactId"], event["eventName"], event["matchingAutomations"]) == (
        contact["id"],
        "purchase_completed",
        2,
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["firedAt"])
    mails = wait_until(lambda: m if len(m := sink.to(email, sender=shop.sender)) == 2 else None, what="two emails")
    subjects = sorted(mail.message["Subject"] for mail in mails)
    assert subjects == ["Receipt ord_abc123", "Welcome to Pro"]
    receipt = next(mail for mail in mails if mail.message["Subject"] == "Receipt ord_abc123").message.get_body()
    assert receipt is not None
    assert receipt.get_content().strip() == "Thanks Ann: 99.0 USD for Pro Plan - Annual"


def test_upsert_merges_metadata_by_email(api_url: str, shop: Tenant) -> None:
    email = f"{unique_workspace_key('merge')}@example.com"
    first = upsert(api_url, shop.token, email)
    second = call(api_url, shop.token, "/contacts", {"email": email.upper(), "metadata": {"plan": "Team"}}).json()
    assert second["data"]["id"] == first
    assert second["data"]["metadata"] == {"plan": "Team", "customerId": "cus_123"}
    assert second["data"]["firstName"] == "Ann"


def test_no_matching_automation_is_not_an_error(api_url: str, shop: Tenant) -> None:
    contact_id = upsert(api_url, shop.token, f"{unique_workspace_key('trial')}@example.com")
    response = call(api_url, shop.token, f"/contacts/{contact_id}/events", {"name": "trial_started"})
    assert response.status_code == 200
    assert response.json()["data"]["matchingAutomations"] == 0


@pytest.mark.parametrize("data", [["a"], "text", 5, {"blob": "x" * 16 * 1024}])
def test_data_must_be_an_object_of_at_most_16_kb(api_url: str, shop: Tenant, data: object) -> None:
    contact_id = upsert(api_url, shop.token, f"{unique_workspace_key('data')}@example.com")
    response = call(api_url, shop.token, f"/contacts/{contact_id}/events", {"name": "purchase_completed", "data": data})
    assert response.status_code == 400, response.text
    # The seed's shape: `error` is the message, and the message names the field.
    assert set(response.json()) == {"error"}
    assert response.json()["error"].startswith("data: ")


def test_null_data_is_an_empty_object(api_url: str, shop: Tenant) -> None:
    contact_id = upsert(api_url, shop.token, f"{unique_workspace_key('null')}@example.com")
    body = {"name": "trial_started", "data": None}
    response = call(api_url, shop.token, f"/contacts/{contact_id}/events", body)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["eventName"] == "trial_started"


def test_unknown_or_foreign_contact_is_404(
    api_url: str, shop: Tenant, tenant: Tenant, db: sessionmaker[Session]
) -> None:
    with db.begin() as session:
        other_token = make_token(session, tenant.key, ["events:write"])
    contact_id = upsert(api_url, shop.token, f"{unique_workspace_key('mine')}@example.com")
    for token, path_id in ((shop.token, "clx1a2b3c4d5e6f7g8h9i0j"), (other_token, contact_id)):
        response = call(api_url, token, f"/contacts/{path_id}/events", {"name": "purchase_completed"})
        assert response.status_code == 404
        assert path_id in response.json()["error"]


def test_token_without_contacts_write_is_403(api_url: str, tenant: Tenant) -> None:
    response = call(api_url, tenant.token, "/contacts", {"email": "a@example.com"})
    assert response.status_code == 403
    assert "contacts:write" in response.json()["error"]


def test_missing_or_bad_token_is_401(api_url: str) -> None:
    answers = {
        "send the API token as 'Authorization: Bearer <token>' or 'x-api-key: <token>'": {},
        "the token is not valid (unknown or revoked)": {"Authorization": "Bearer nope"},
    }
    for message, headers in answers.items():
        response = httpx.post(
            f"{api_url}/compat/emailsendx/api/v1/contacts", json={"email": "a@example.com"}, headers=headers
        )
        assert response.status_code == 401
        assert response.json() == {"error": message}


def test_token_in_x_api_key_upserts_and_fires(api_url: str, shop: Tenant) -> None:
    email = f"{unique_workspace_key('apikey')}@example.com"
    base = f"{api_url}/compat/emailsendx/api/v1"
    headers = {"x-api-key": shop.token}
    upserted = httpx.post(f"{base}/contacts", json={"email": email}, headers=headers, timeout=10)
    assert upserted.status_code == 200, upserted.text
    contact_id = upserted.json()["data"]["id"]
    path = f"{base}/contacts/{contact_id}/events"
    fired = httpx.post(path, json={"name": "purchase_completed"}, headers=headers, timeout=10)
    assert fired.status_code == 200, fired.text
    assert (fired.json()["data"]["contactId"], fired.json()["data"]["matchingAutomations"]) == (contact_id, 2)


def test_seed_branch_on_purchase_value_sends_the_email_the_amount_chooses(
    api_url: str, db: sessionmaker[Session], sink: Sink
) -> None:
    """Seed 004: "a purchase_completed event with data.amount could branch the automation to send different emails
    based on purchase value"."""
    spec = workspace_spec(
        "branch",
        templates=[
            make_template("vip", "VIP thanks for {{ data.amount }}", "{{ data.items | join(', ') }}"),
            make_template("thanks", "Thanks for {{ data.amount }}", "{{ data.items | join(', ') }}"),
        ],
        automations=[
            {
                "name": "Purchase by value",
                "trigger": "purchase_completed",
                "steps": [
                    {"update_contact": {"set": {"last_order": "{{ data.orderId }}"}}},
                    {
                        "condition": {
                            "if": 'data.amount > 100 and data.currency == "USD"',
                            "then": [{"send_email": {"template": "vip"}}],
                            "else": [{"send_email": {"template": "thanks"}}],
                        }
                    },
                ],
            }
        ],
    )
    tenant = make_tenant(db, spec, ["contacts:write", "contacts:read", "events:write"])
    token = tenant.token
    small, big = (f"{unique_workspace_key(name)}@example.com" for name in ("small", "big"))
    for email, body in ((small, SEED_EVENT_BODY), (big, SEED_EVENT_BODY.replace("99.00", "150.00"))):
        contact_id = upsert(api_url, token, email)
        fired = call(api_url, token, f"/contacts/{contact_id}/events", content=body)
        assert fired.status_code == 200, fired.text
        assert fired.json()["data"]["matchingAutomations"] == 1

    sender = tenant.sender
    [small_mail] = wait_until(lambda: sink.to(small, sender=sender) or None, what="the small purchase's email")
    [big_mail] = wait_until(lambda: sink.to(big, sender=sender) or None, what="the big purchase's email")
    assert small_mail.message["Subject"] == "Thanks for 99.0"
    assert big_mail.message["Subject"] == "VIP thanks for 150.0"
    text = big_mail.message.get_body()
    assert text is not None
    assert text.get_content().strip() == "Pro Plan - Annual"
    with db() as session:
        orders = session.scalars(
            select(Contact.fields["last_order"].as_string()).where(Contact.email.in_([small, big]))
        )
        assert set(orders) == {"ord_abc123"}
