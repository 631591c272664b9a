"""bunce (seed 003) against the real stack: the seed's curl example sent literally, then every error rule."""

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import Tenant, make_tenant, password_reset_spec, unique_workspace_key
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink
from tripmail.models import Event, Workspace

SEED_EVENT_ID = "9bb6215c-e2b1-4e51-abff-3a96ca185088"
RENEWED_EVENT_ID = "0f0d3b7e-4a1c-4d8e-9a51-7c2b1e5f9a10"
SEED_BODY = """{
    "event_id": "9bb6215c-e2b1-4e51-abff-3a96ca185088",
    "payload": {
        "email": "johndoe@example.com",
        "date_purchased" : "2012-09-03T14:30:00Z"
    }
}"""
# The seed's Go and Java examples leave the timestamp unquoted, which is not JSON.
SEED_GO_BODY = (
    '{\n "event_id": "9bb6215c-e2b1-4e51-abff-3a96ca185088",\n "payload": {\n "email": "johndoe@example.com",'
    '\n "date_purchased": 2012-09-03T14:30:00Z\n    }\n}'
)


@pytest.fixture
def bunce_tenant(db: sessionmaker[Session]) -> Tenant:
    """The seed's event (uuid 9bb6215c-…, one timestamp param) and another with a number param."""
    key = unique_workspace_key("bunce")
    spec = password_reset_spec(key, event="PURCHASED")
    spec["event_types"][0] |= {"uuid": SEED_EVENT_ID, "params": {"date_purchased": "timestamp"}}
    spec["event_types"].append({"key": "RENEWED", "uuid": RENEWED_EVENT_ID, "params": {"amount": "number"}})
    spec["templates"][0]["text"] = "Purchased on {{ date_purchased or 'an unknown date' }}{{ amount }}"
    spec["automations"].append(spec["automations"][0] | {"name": "Renewal", "trigger": "RENEWED"})
    return make_tenant(db, spec)


def trigger(api_url: str, token: str | None, body: str) -> httpx.Response:
    headers = {"Content-Type": "application/json"} | ({"X-Authorization": token} if token else {})
    return httpx.post(f"{api_url}/compat/bunce/v1/events/trigger", content=body.encode(), headers=headers, timeout=10)


def body_with(payload: str, event_id: str = SEED_EVENT_ID) -> str:
    return f'{{"event_id": "{event_id}", "payload": {payload}}}'


def plain_text(sink: Sink, email: str, tenant: Tenant) -> str:
    [mail] = wait_until(lambda: sink.to(email, sender=tenant.sender), what=f"the email to {email}")
    text = mail.message.get_body(("plain",))
    assert text is not None
    return str(text.get_content().strip())


def event_data(db: sessionmaker[Session], tenant: Tenant) -> list[dict[str, object]]:
    with db() as session:
        workspace_id = session.scalars(select(Workspace.id).where(Workspace.key == tenant.key)).one()
        return [e.request["data"] for e in session.scalars(select(Event).where(Event.workspace_id == workspace_id))]


def test_seed_example_answers_as_documented_and_sends_the_email(api_url: str, bunce_tenant: Tenant, sink: Sink) -> None:
    response = trigger(api_url, bunce_tenant.token, SEED_BODY)

    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "data": True, "message": "Event successfully triggered"}
    assert plain_text(sink, "johndoe@example.com", bunce_tenant) == "Purchased on 2012-09-03T14:30:00Z"


def test_number_param_is_typed(api_url: str, bunce_tenant: Tenant, sink: Sink) -> None:
    email = f"{unique_workspace_key('n')}@example.com"
    response = trigger(
        api_url, bunce_tenant.token, body_with(f'{{"email": "{email}", "amount": "12.5"}}', RENEWED_EVENT_ID)
    )
    assert response.status_code == 200, response.text
    assert plain_text(sink, email, bunce_tenant) == "Purchased on an unknown date12.5"


def test_timestamp_in_another_format_is_skipped_not_fatal(
    api_url: str, bunce_tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"{unique_workspace_key('ts')}@example.com"
    response = trigger(
        api_url, bunce_tenant.token, body_with(f'{{"email": "{email}", "date_purchased": "2012-09-03 14:30"}}')
    )

    assert response.status_code == 200, response.text
    assert plain_text(sink, email, bunce_tenant) == "Purchased on an unknown date"
    assert event_data(db, bunce_tenant) == [{}]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ('{"amount": 1}', "payload.email"),
        ('{"email": "not-an-email", "amount": 1}', "payload.email"),
        ('{"email": "a@example.com", "amount": "lots"}', "payload.amount"),
        ('{"email": "a@example.com"}', "payload.amount"),
    ],
)
def test_parameter_errors_are_422_naming_the_field(
    api_url: str, bunce_tenant: Tenant, payload: str, field: str
) -> None:
    response = trigger(api_url, bunce_tenant.token, body_with(payload, RENEWED_EVENT_ID))
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["success"] is False
    assert field in answer["error"]


def test_unknown_or_foreign_event_id_is_422(api_url: str, bunce_tenant: Tenant, tenant: Tenant) -> None:
    for token, event_id in (
        (bunce_tenant.token, "00000000-0000-0000-0000-000000000000"),
        (tenant.token, SEED_EVENT_ID),
    ):
        response = trigger(api_url, token, body_with('{"email": "a@example.com"}', event_id=event_id))
        assert response.status_code == 422
        assert "event_id" in response.json()["error"]


def test_seed_go_example_is_invalid_json_and_says_so(api_url: str, bunce_tenant: Tenant) -> None:
    response = trigger(api_url, bunce_tenant.token, SEED_GO_BODY)
    assert response.status_code == 422
    assert response.json()["success"] is False
    assert "not valid JSON" in response.json()["error"]["body"]


def test_missing_or_bad_token_is_401(api_url: str) -> None:
    for token in (None, "sk_live_************************"):
        response = trigger(api_url, token, SEED_BODY)
        assert response.status_code == 401
        assert response.json()["success"] is False
        assert set(response.json()["error"]) == {"X-Authorization"}


def test_bearer_token_and_trailing_slash_are_served(api_url: str, bunce_tenant: Tenant, sink: Sink) -> None:
    email = f"{unique_workspace_key('bearer')}@example.com"
    response = httpx.post(
        f"{api_url}/compat/bunce/v1/events/trigger/",
        content=body_with(f'{{"email": "{email}", "date_purchased": "2012-09-03T14:30:00Z"}}').encode(),
        headers={"Authorization": f"Bearer {bunce_tenant.token}", "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"success": True, "data": True, "message": "Event successfully triggered"}
    assert plain_text(sink, email, bunce_tenant) == "Purchased on 2012-09-03T14:30:00Z"
