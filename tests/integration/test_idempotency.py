"""A key and the same content make a duplicate; a key with other content is another esputnik event, and a
refused native one (409), never mail silently dropped."""

import base64
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import Tenant, unique_workspace_key
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink
from tripmail.models import Event, Workspace


def links(sink: Sink, email: str) -> list[str]:
    """The reset link of each email `email` received, in arrival order."""
    texts = [mail.message.get_body(("plain",)) for mail in sink.to(email)]
    return [text.get_content().strip().rsplit(" ", 1)[-1] for text in texts if text is not None]


def events_of(db: sessionmaker[Session], tenant: Tenant) -> list[Event]:
    with db() as session:
        workspace = select(Workspace.id).where(Workspace.key == tenant.key).scalar_subquery()
        return list(session.scalars(select(Event).where(Event.workspace_id == workspace).order_by(Event.id)))


def settled(db: sessionmaker[Session], tenant: Tenant, count: int) -> list[Event] | None:
    events = events_of(db, tenant)
    return events if len(events) == count and all(event.processed_at for event in events) else None


def esputnik(api_url: str, tenant: Tenant, key_value: str, email: str, link: str) -> httpx.Response:
    body = {
        "eventTypeKey": "FORGOT_PASSWORD",
        "keyValue": key_value,
        "params": [{"name": "email", "value": email}, {"name": "forgot_password_link", "value": link}],
    }
    auth = "Basic " + base64.b64encode(f"api:{tenant.token}".encode()).decode()
    return httpx.post(f"{api_url}/compat/esputnik/api/v2/event", json=body, headers={"Authorization": auth}, timeout=10)


def reset(email: str, key: str, link: str) -> dict[str, Any]:
    return {"event": "FORGOT_PASSWORD", "key": key, "contact": {"email": email}, "data": {"forgot_password_link": link}}


def native(api_url: str, tenant: Tenant, body: dict[str, Any]) -> httpx.Response:
    headers = {"Authorization": f"Bearer {tenant.token}"}
    return httpx.post(f"{api_url}/v1/events", json=body, headers=headers, timeout=10)


def test_esputnik_same_key_value_and_content_sends_once_other_content_sends_again(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    # The seed's keyValue is the contact's address: one contact, two different events, and a retry of the first.
    email = f"{unique_workspace_key('esp')}@example.com"
    answers = [
        esputnik(api_url, tenant, email, email, "https://x/first"),
        esputnik(api_url, tenant, email, email, "https://x/first"),
        esputnik(api_url, tenant, email, email, "https://x/second"),
    ]

    assert [answer.status_code for answer in answers] == [200, 200, 200], [answer.text for answer in answers]
    events = wait_until(lambda: settled(db, tenant, 2), what="both events recorded")
    assert [event.status for event in events] == ["processed", "processed"]
    wait_until(lambda: len(sink.to(email)) == 2, what="both emails")
    assert sorted(links(sink, email)) == ["https://x/first", "https://x/second"]


def test_native_same_key_and_body_is_a_duplicate_other_body_is_409_naming_the_first(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"{unique_workspace_key('nat')}@example.com"
    first = native(api_url, tenant, reset(email, "reset-1", "https://x/first"))
    retry = native(api_url, tenant, reset(email, "reset-1", "https://x/first"))
    reused = native(api_url, tenant, reset(email, "reset-1", "https://x/other"))
    # Sent after the refused one: once its email is in, a queued refused event would have been recorded too.
    later = native(api_url, tenant, reset(email, "reset-2", "https://x/later"))

    assert (first.status_code, retry.status_code, later.status_code) == (202, 202, 202)
    assert (first.json()["duplicate"], retry.json()["duplicate"]) == (False, True)
    assert retry.json()["id"] == first.json()["id"]
    assert reused.status_code == 409, reused.text
    assert reused.headers["content-type"] == "application/problem+json"
    problem = reused.json()
    assert (problem["type"], problem["field"], problem["first_event_id"]) == (
        "/problems/key-reused",
        "key",
        first.json()["id"],
    )
    assert first.json()["id"] in problem["detail"]
    events = wait_until(lambda: settled(db, tenant, 2), what="the two accepted events recorded")
    assert [event.id for event in events] == [first.json()["id"], later.json()["id"]]
    wait_until(lambda: len(sink.to(email)) == 2, what="the first and the later email")
    assert sorted(links(sink, email)) == ["https://x/first", "https://x/later"]


def test_native_batch_answers_duplicate_and_key_reused_per_event(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"{unique_workspace_key('bat')}@example.com"
    events = [
        reset(email, "batch-1", "https://x/first"),
        reset(email, "batch-1", "https://x/first"),
        reset(email, "batch-1", "https://x/other"),
        reset(email, "batch-2", "https://x/next"),
    ]
    response = httpx.post(
        f"{api_url}/v1/events/batch",
        json={"events": events},
        headers={"Authorization": f"Bearer {tenant.token}"},
        timeout=10,
    )

    assert response.status_code == 202, response.text
    body = response.json()
    first, retry, reused, following = body["results"]
    assert (body["accepted"], body["rejected"]) == (3, 1)
    assert (retry["status"], retry["duplicate"], retry["id"]) == ("queued", True, first["id"])
    assert (reused["status"], reused["first_event_id"], reused["errors"][0]["field"]) == (
        "rejected",
        first["id"],
        "key",
    )
    assert first["id"] in reused["errors"][0]["message"]
    # One task carries the batch: once its two events are recorded, a queued refused one would be too.
    recorded = wait_until(lambda: settled(db, tenant, 2), what="the batch's events recorded")
    assert [event.id for event in recorded] == [first["id"], following["id"]]
    wait_until(lambda: len(sink.to(email)) == 2, what="the batch's two emails")
    assert sorted(links(sink, email)) == ["https://x/first", "https://x/next"]


def test_concurrent_requests_with_one_key_send_once(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"{unique_workspace_key('race')}@example.com"
    bodies = [reset(email, "race-1", f"https://x/{index % 2}") for index in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda body: native(api_url, tenant, body), bodies))

    new = [(body, answer.json()) for body, answer in zip(bodies, answers, strict=True) if answer.status_code == 202]
    [(winner, accepted)] = [(body, answer) for body, answer in new if not answer["duplicate"]]
    for body, answer in zip(bodies, answers, strict=True):
        if body == winner:
            assert (answer.status_code, answer.json()["id"]) == (202, accepted["id"]), answer.text
        else:
            assert (answer.status_code, answer.json()["first_event_id"]) == (409, accepted["id"]), answer.text
    later = native(api_url, tenant, reset(email, "race-2", "https://x/later"))
    assert later.status_code == 202
    wait_until(lambda: settled(db, tenant, 2), what="the winner and the later event recorded")
    wait_until(lambda: len(sink.to(email)) == 2, what="the winner's and the later email")
    assert sorted(links(sink, email)) == sorted([winner["data"]["forgot_password_link"], "https://x/later"])
