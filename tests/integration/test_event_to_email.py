"""POST /v1/events over HTTP → Redis → worker process → SMTP sink, checked at the sink and in the database."""

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import Tenant, unique_workspace_key
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink
from tripmail.models import Event, Message, Workspace


def post_event(api_url: str, token: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{api_url}/v1/events", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=10)


def reset_event(email: str, **extra: object) -> dict[str, object]:
    return {
        "event": "forgot_password",
        "contact": {"email": email, "fields": {"first_name": "Ann"}},
        "data": {"forgot_password_link": "https://app.example/reset/{{ 7*7 }}", "note": "<b>hi</b>"},
    } | extra


def processed_event(db: sessionmaker[Session], event_id: str) -> Event | None:
    with db() as session:
        event = session.get(Event, event_id)
        return event if event is not None and event.processed_at is not None else None


def settled_messages(db: sessionmaker[Session], event_id: str) -> list[Message]:
    """The event's messages once none is pending or being sent any more (empty until then)."""
    with db() as session:
        messages = list(session.scalars(select(Message).where(Message.event_id == event_id)))
    return messages if messages and all(m.status in ("sent", "failed") for m in messages) else []


def test_event_sends_exactly_one_rendered_email(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"{unique_workspace_key('ann')}@example.com"
    response = post_event(api_url, tenant.token, reset_event(email))

    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued" and body["duplicate"] is False and body["matching_automations"] == 1
    [mail] = wait_until(lambda: sink.to(email), what="the email at the sink")
    [message] = wait_until(lambda: settled_messages(db, body["id"]), what="the message row to settle")

    assert message.status == "sent" and message.attempts == 1
    assert message.smtp_code == 250 and message.smtp_reply is not None and "queued" in message.smtp_reply
    assert mail.mail_from == tenant.sender
    parsed = mail.message
    assert parsed["Subject"] == f"Reset for {email}"
    assert parsed["To"] == email
    assert parsed["Message-ID"].strip() == message.message_id_header  # folding before it is legal (CFWS)
    text = parsed.get_body(("plain",))
    html = parsed.get_body(("html",))
    assert text is not None and html is not None
    assert text.get_content().strip() == "Hi Ann, reset here: https://app.example/reset/{{ 7*7 }}"
    assert html.get_content().strip() == "<a href='https://app.example/reset/{{ 7*7 }}'>Reset</a> &lt;b&gt;hi&lt;/b&gt;"
    assert len(sink.to(email)) == 1


def test_event_nobody_listens_to_is_accepted_and_sends_nothing(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"{unique_workspace_key('bob')}@example.com"
    response = post_event(api_url, tenant.token, reset_event(email, event="nobody_listens"))

    assert response.status_code == 202, response.text
    assert response.json()["matching_automations"] == 0
    event = wait_until(lambda: processed_event(db, response.json()["id"]), what="the event to be recorded")
    assert event.matched_automations == 0
    with db() as session:
        assert session.scalars(select(Message).where(Message.event_id == event.id)).all() == []
    assert sink.to(email) == []


def test_repeated_key_is_a_duplicate_and_sends_once(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"{unique_workspace_key('cy')}@example.com"
    first = post_event(api_url, tenant.token, reset_event(email, key="reset-42"))
    second = post_event(api_url, tenant.token, reset_event(email, key="reset-42", event="FORGOT_PASSWORD"))

    assert first.status_code == second.status_code == 202
    assert second.json()["duplicate"] is True
    assert second.json()["id"] == first.json()["id"]
    wait_until(lambda: settled_messages(db, first.json()["id"]), what="the message to settle")
    assert len(sink.to(email)) == 1


def test_permanent_smtp_refusal_marks_the_message_failed(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"reject-{unique_workspace_key('dee')}@example.com"
    response = post_event(api_url, tenant.token, reset_event(email))

    [message] = wait_until(lambda: settled_messages(db, response.json()["id"]), what="the message to settle")
    assert (message.status, message.smtp_code, message.attempts) == ("failed", 550, 1)
    assert message.smtp_reply is not None and "mailbox unavailable" in message.smtp_reply
    assert sink.to(email) == []


def test_a_token_only_reaches_its_own_workspace(
    api_url: str, tenant: Tenant, other_tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"{unique_workspace_key('eve')}@example.com"
    response = post_event(api_url, tenant.token, reset_event(email, event="ONLY_OTHER"))

    assert response.json()["matching_automations"] == 0
    event = wait_until(lambda: processed_event(db, response.json()["id"]), what="the event to be recorded")
    with db() as session:
        assert session.scalars(select(Workspace.key).where(Workspace.id == event.workspace_id)).one() == tenant.key
    assert event.matched_automations == 0
    assert sink.to(email) == []


def test_batch_answers_per_item_and_sends_each_valid_event(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    emails = [f"{unique_workspace_key(f'b{i}')}@example.com" for i in range(2)]
    events = [
        reset_event(emails[0], key="batch-1"),
        {"event": "forgot_password", "contact": {"email": "not-an-email"}},
        reset_event(emails[0], key="batch-1"),  # a retry of the first: its content is the same
        reset_event(emails[1]),
    ]
    response = httpx.post(
        f"{api_url}/v1/events/batch",
        json={"events": events},
        headers={"Authorization": f"Bearer {tenant.token}"},
        timeout=10,
    )

    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (3, 1)
    first, invalid, duplicate, plain = body["results"]
    assert [item["index"] for item in body["results"]] == [0, 1, 2, 3]
    assert first["status"] == plain["status"] == duplicate["status"] == "queued"
    assert invalid["status"] == "rejected"
    assert invalid["errors"][0]["field"] == "contact.email"
    assert (duplicate["duplicate"], duplicate["id"]) == (True, first["id"])
    wait_until(lambda: sink.to(emails[0]), what="the first email")
    wait_until(lambda: sink.to(emails[1]), what="the last email")
    wait_until(lambda: settled_messages(db, plain["id"]), what="the last message to settle")
    assert len(sink.to(emails[0])) == 1


def test_batch_over_1000_events_is_refused_whole(api_url: str, tenant: Tenant) -> None:
    events = [{"event": "x", "contact": {"email": "a@example.com"}}] * 1001
    response = httpx.post(
        f"{api_url}/v1/events/batch", json={"events": events}, headers={"Authorization": f"Bearer {tenant.token}"}
    )
    assert response.status_code == 422
    assert response.json()["field"] == "events"
