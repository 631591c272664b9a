"""cocomail (seed 000) against the real stack: the seed's example sent literally, then every error rule."""

from collections.abc import Mapping

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import Tenant, make_token
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink
from tripmail.models import Contact, EventType, Workspace

# The seed's curl example, byte for byte; `curl -d` labels it form-urlencoded.
SEED_EXAMPLE = """{
"email":"user@example.com",
"identifier":"FORGOT_PASSWORD",
"consentsToEmails":"true",
"contactMetadata": {
"forgot_password_at": "2024-03-11T13:45:00.000Z"
},
"triggerMetadata": {
"forgot_password_link": "https://app-url.com/forgot-password/unique-password-reset-page"
}
}"""
CURL_D = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
def token(tenant: Tenant, db: sessionmaker[Session]) -> str:
    """A token of the tenant's workspace that triggers, and reads the stored contact that the answer shows."""
    with db.begin() as session:
        return make_token(session, tenant.key, ["events:write", "contacts:read"])


def trigger(api_url: str, token: str, body: str | Mapping[str, object]) -> httpx.Response:
    url = f"{api_url}/compat/cocomail/events/trigger"
    if isinstance(body, str):
        return httpx.post(url, content=body.encode(), headers={"Authorization": token, **CURL_D}, timeout=10)
    return httpx.post(url, json=body, headers={"Authorization": token}, timeout=10)


def test_seed_example_answers_as_documented_and_sends_the_email(
    api_url: str, token: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    response = trigger(api_url, token, SEED_EXAMPLE)

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["error"] is None
    assert set(answer) == {"data", "error"}
    assert set(answer["data"]) == {"contact", "event", "trigger"}
    contact, event = answer["data"]["contact"], answer["data"]["event"]
    assert set(contact) == {"id", "email", "metadata", "createdAt"}
    assert set(event) == {"id", "name", "identifier", "createdAt"}
    assert contact["email"] == "user@example.com"
    assert contact["metadata"] == {"forgot_password_at": "2024-03-11T13:45:00.000Z"}
    assert contact["createdAt"].endswith("Z")
    assert len(contact["createdAt"]) == len("2024-03-12T13:04:04.566Z")
    assert (event["name"], event["identifier"]) == ("Forgot Password", "FORGOT_PASSWORD")
    assert answer["data"]["trigger"] == {
        "metadata": {"forgot_password_link": "https://app-url.com/forgot-password/unique-password-reset-page"}
    }
    with db() as session:
        workspace_id = session.scalars(select(Workspace.id).where(Workspace.key == tenant.key)).one()
        stored = session.scalars(select(EventType).where(EventType.workspace_id == workspace_id)).one()
        assert event["id"] == stored.uuid
        assert session.get_one(Contact, contact["id"]).workspace_id == workspace_id

    [mail] = wait_until(lambda: sink.to("user@example.com", sender=tenant.sender), what="the reset email")
    text = mail.message.get_body(("plain",))
    assert text is not None
    assert "https://app-url.com/forgot-password/unique-password-reset-page" in text.get_content()


def test_contact_metadata_updates_existing_keys_and_keeps_others(api_url: str, token: str) -> None:
    first = {"email": "meta@example.com", "identifier": "FORGOT_PASSWORD", "contactMetadata": {"a": 1, "b": 1}}
    second = {"email": "META@example.com", "identifier": "forgot_password", "contactMetadata": {"b": 2}}
    trigger(api_url, token, first)
    answer = trigger(api_url, token, second).json()
    assert answer["data"]["contact"]["metadata"] == {"a": 1, "b": 2}


def test_consent_string_false_is_stored(api_url: str, token: str, db: sessionmaker[Session]) -> None:
    body = {"email": "noconsent@example.com", "identifier": "FORGOT_PASSWORD", "consentsToEmails": "false"}
    contact_id = trigger(api_url, token, body).json()["data"]["contact"]["id"]
    with db() as session:
        assert session.get_one(Contact, contact_id).consents == {"email": False}


def test_unknown_identifier_is_the_documented_error_and_creates_nothing(
    api_url: str, token: str, db: sessionmaker[Session]
) -> None:
    body = {"email": "user@example.com", "identifier": "INVALID_EVENT_IDENTIFIER"}
    response = trigger(api_url, token, body)
    assert response.status_code == 404
    assert response.json() == {"data": None, "error": "Event with identifier INVALID_EVENT_IDENTIFIER not found"}
    with db() as session:
        assert session.scalars(select(EventType).where(EventType.key == "INVALID_EVENT_IDENTIFIER")).all() == []


def test_event_of_another_workspace_is_not_found(api_url: str, token: str, other_tenant: Tenant) -> None:
    response = trigger(api_url, token, {"email": "user@example.com", "identifier": "ONLY_OTHER"})
    assert response.json() == {"data": None, "error": "Event with identifier ONLY_OTHER not found"}


def test_bad_or_missing_token_is_401_in_cocomail_shape(api_url: str) -> None:
    for headers in ({}, {"Authorization": "tm_live_nope"}):
        response = httpx.post(
            f"{api_url}/compat/cocomail/events/trigger", content=SEED_EXAMPLE.encode(), headers=headers, timeout=10
        )
        assert response.status_code == 401
        assert response.json()["data"] is None
        assert "token" in response.json()["error"]


def test_invalid_body_names_the_field(api_url: str, token: str) -> None:
    response = trigger(api_url, token, {"identifier": "FORGOT_PASSWORD", "email": "nope"})
    assert response.status_code == 400  # its SDK reads only a 400 as a readable error
    assert response.json()["data"] is None
    assert response.json()["error"].startswith("email: ")


def test_consent_applies_to_a_created_contact_only(api_url: str, token: str, db: sessionmaker[Session]) -> None:
    body: dict[str, object] = {
        "email": "optout@example.com",
        "identifier": "FORGOT_PASSWORD",
        "consentsToEmails": False,
    }
    contact_id = trigger(api_url, token, body)
    for consents in (None, "true"):
        again = {"email": "optout@example.com", "identifier": "FORGOT_PASSWORD"}
        trigger(api_url, token, again if consents is None else again | {"consentsToEmails": consents})
    with db() as session:
        stored = session.get_one(Contact, contact_id.json()["data"]["contact"]["id"])
    assert stored.consents == {"email": False}


def test_null_consent_is_the_default_consent(api_url: str, token: str, db: sessionmaker[Session]) -> None:
    body = {"email": "nullconsent@example.com", "identifier": "FORGOT_PASSWORD", "consentsToEmails": None}
    response = trigger(api_url, token, body)
    assert response.status_code == 200, response.text
    with db() as session:
        assert session.get_one(Contact, response.json()["data"]["contact"]["id"]).consents == {"email": True}
