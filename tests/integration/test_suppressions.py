"""The suppression list through the whole stack: HTTP with its scopes, the CLI, and what it does to the mail."""

from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import Tenant, make_token, unique_workspace_key
from tests.support.event_posts import post
from tests.support.message_states import message_of_event_settled
from tests.support.polling import wait_until
from tests.support.smtp_sink import Sink
from tests.support.stack import run_tripmail
from tripmail.config import Settings
from tripmail.models import Suppression, Workspace

CONTACTS = ["contacts:read", "contacts:write"]


def token(db: sessionmaker[Session], tenant: Tenant, scopes: list[str]) -> dict[str, str]:
    """The Authorization header of a new token of the tenant's workspace with these scopes."""
    with db.begin() as session:
        return {"Authorization": f"Bearer {make_token(session, tenant.key, scopes)}"}


def suppressions(api_url: str, headers: dict[str, str], **params: Any) -> httpx.Response:
    return httpx.get(f"{api_url}/v1/suppressions", params=params, headers=headers, timeout=10)


def suppress(api_url: str, headers: dict[str, str], body: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{api_url}/v1/suppressions", json=body, headers=headers, timeout=10)


def lift(api_url: str, headers: dict[str, str], email: str) -> httpx.Response:
    return httpx.delete(f"{api_url}/v1/suppressions/{email}", headers=headers, timeout=10)


def stored(db: sessionmaker[Session], tenant: Tenant) -> dict[str, tuple[str, str]]:
    """The workspace's suppression rows: source and reason by address."""
    with db() as session:
        rows = session.execute(
            select(Suppression.email, Suppression.source, Suppression.reason)
            .join(Workspace, Workspace.id == Suppression.workspace_id)
            .where(Workspace.key == tenant.key)
        ).all()
    return {email: (source, reason) for email, source, reason in rows}


def test_add_list_and_remove_over_http_within_the_tokens_workspace(
    api_url: str, tenant: Tenant, other_tenant: Tenant, db: sessionmaker[Session]
) -> None:
    mine, theirs = token(db, tenant, CONTACTS), token(db, other_tenant, CONTACTS)
    email = f"ann-{tenant.key}@example.com"

    created = suppress(api_url, mine, {"email": f" {email.upper()} ", "reason": "asked to stop"})
    again = suppress(api_url, mine, {"email": email, "reason": "something else"})
    assert created.status_code == 201, created.text
    assert created.json().keys() == {"email", "source", "reason", "created_at"}
    assert (created.json()["email"], created.json()["source"], created.json()["reason"]) == (
        email,
        "manual",
        "asked to stop",
    )
    assert (again.status_code, again.json()) == (200, created.json())
    listed = suppressions(api_url, mine)
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"items": [created.json()], "next_after": None}
    assert suppressions(api_url, mine, email=email.upper()).json()["items"] == [created.json()]

    # The other workspace's token sees nothing of it and deletes nothing of it.
    assert suppressions(api_url, theirs).json() == {"items": [], "next_after": None}
    assert suppressions(api_url, theirs, email=email).json()["items"] == []
    refused = lift(api_url, theirs, email)
    assert refused.status_code == 404 and refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["field"] == "email"
    assert stored(db, tenant) == {email: ("manual", "asked to stop")}

    deleted = lift(api_url, mine, email)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert stored(db, tenant) == {}
    gone = lift(api_url, mine, email)
    assert gone.status_code == 404 and f"{email} is not suppressed in this workspace" in gone.json()["detail"]


def test_the_list_comes_in_pages_oldest_first(api_url: str, tenant: Tenant, db: sessionmaker[Session]) -> None:
    headers = token(db, tenant, CONTACTS)
    emails = [f"page{number}-{tenant.key}@example.com" for number in range(5)]
    for email in emails:
        assert suppress(api_url, headers, {"email": email}).status_code == 201

    pages, after = [], None
    while True:
        page = suppressions(api_url, headers, limit=2, **({"after": after} if after is not None else {})).json()
        pages.append([item["email"] for item in page["items"]])
        after = page["next_after"]
        if after is None:
            break
    assert pages == [emails[0:2], emails[2:4], emails[4:]]
    too_many = suppressions(api_url, headers, limit=1001)
    assert too_many.status_code == 422 and too_many.json()["field"] == "limit"


def test_scopes_and_invalid_addresses_are_refused_as_problems(
    api_url: str, tenant: Tenant, db: sessionmaker[Session]
) -> None:
    reader, writer = token(db, tenant, ["contacts:read"]), token(db, tenant, ["contacts:write"])
    events_only = {"Authorization": f"Bearer {tenant.token}"}
    email = f"scoped-{tenant.key}@example.com"

    for answer, scope in [
        (suppressions(api_url, events_only), "contacts:read"),
        (suppressions(api_url, writer), "contacts:read"),
        (suppress(api_url, reader, {"email": email}), "contacts:write"),
        (lift(api_url, reader, email), "contacts:write"),
    ]:
        assert answer.status_code == 403, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert f"the token lacks the {scope!r} scope" == answer.json()["detail"]
    assert stored(db, tenant) == {}

    for answer in [
        suppress(api_url, writer, {"email": "not-an-address"}),
        suppressions(api_url, reader, email="not-an-address"),
        lift(api_url, writer, "not-an-address"),
    ]:
        assert answer.status_code == 422, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["field"] == "email" and problem["errors"][0]["field"] == "email"
        assert "'not-an-address' is not a valid email address" in problem["detail"]
    missing = suppress(api_url, writer, {"reason": "no address"})
    assert missing.status_code == 422 and missing.json()["field"] == "email"
    assert stored(db, tenant) == {}


def test_a_suppressed_address_gets_no_mail_until_its_suppression_is_deleted(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    headers = token(db, tenant, CONTACTS)
    email = f"held-{tenant.key}@example.com"
    assert suppress(api_url, headers, {"email": email, "reason": "complained"}).status_code == 201

    held_id = post(api_url, tenant, email).json()["id"]
    held = wait_until(lambda: message_of_event_settled(db, held_id), what="the message to the suppressed address")
    assert (held.status, held.attempts) == ("suppressed", 0)
    assert lift(api_url, headers, email).status_code == 204

    sent_id = post(api_url, tenant, email).json()["id"]
    sent = wait_until(lambda: message_of_event_settled(db, sent_id), what="the message after the deletion")
    assert sent.status == "sent"
    [mail] = sink.to(email)
    assert mail.message["Subject"] == f"Reset for {email}"


def test_a_hard_bounce_is_listed_with_source_smtp_and_the_servers_reply(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session]
) -> None:
    email = f"reject-{tenant.key}@example.com"
    event_id = post(api_url, tenant, email).json()["id"]
    assert wait_until(lambda: message_of_event_settled(db, event_id), what="the bounce").status == "failed"

    listed = suppressions(api_url, token(db, tenant, ["contacts:read"]), email=email).json()["items"]
    # The sink refuses the recipient: the reason names the command it answered, and its reply.
    assert [(item["email"], item["source"], item["reason"]) for item in listed] == [
        (email, "smtp", "RCPT TO: 550 5.1.1 mailbox unavailable")
    ]


def test_the_cli_adds_lists_and_removes_and_the_address_is_mailed_again(
    api_url: str, tenant: Tenant, sink: Sink, db: sessionmaker[Session], stack_settings: Settings
) -> None:
    ann, bob = f"ann-{tenant.key}@example.com", f"bob-{tenant.key}@example.com"
    nobody = f"nobody-{tenant.key}@example.com"
    key = tenant.key

    added = run_tripmail(
        stack_settings, "suppressions", "add", "--workspace", key, ann.upper(), bob, "--reason", "asked"
    )
    again = run_tripmail(stack_settings, "suppressions", "add", "--workspace", key, ann)
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines() == [f"suppressed {ann} in workspace {key}", f"suppressed {bob} in workspace {key}"]
    assert again.returncode == 0 and again.stdout.startswith(f"{ann} was already suppressed (manual, 20")
    assert again.stdout.rstrip().endswith("), left as it is")
    assert stored(db, tenant) == {ann: ("manual", "asked"), bob: ("manual", "asked")}
    over_http = suppressions(api_url, token(db, tenant, ["contacts:read"])).json()["items"]
    assert [(item["email"], item["source"], item["reason"]) for item in over_http] == [
        (ann, "manual", "asked"),
        (bob, "manual", "asked"),
    ]

    listed = run_tripmail(stack_settings, "suppressions", "list", "--workspace", key).stdout.splitlines()
    assert [line.split("  ")[:2] for line in listed[:-1]] == [[bob, "manual"], [ann, "manual"]]
    assert listed[0].endswith("  asked") and listed[-1] == f"2 suppression(s) of workspace {key}"
    newest = run_tripmail(stack_settings, "suppressions", "list", "--limit", "1").stdout.splitlines()
    assert newest[0].startswith(f"{key}  {bob}  manual  20") and newest[-1] == "1 suppression(s)"

    held_id = post(api_url, tenant, ann).json()["id"]
    assert wait_until(lambda: message_of_event_settled(db, held_id), what="the held message").status == "suppressed"
    removed = run_tripmail(stack_settings, "suppressions", "remove", "--workspace", key, ann, nobody)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.splitlines() == [
        f"removed {ann} from the suppressions of workspace {key}",
        f"{nobody} was not suppressed in workspace {key}",
    ]
    assert stored(db, tenant) == {bob: ("manual", "asked")}
    sent_id = post(api_url, tenant, ann).json()["id"]
    assert wait_until(lambda: message_of_event_settled(db, sent_id), what="the message after removal").status == "sent"
    assert len(sink.to(ann)) == 1


def test_the_cli_names_an_unknown_workspace_and_an_invalid_address(
    tenant: Tenant, db: sessionmaker[Session], stack_settings: Settings
) -> None:
    nope = unique_workspace_key("nope")
    good = f"good-{tenant.key}@example.com"
    refusals = [
        (run_tripmail(stack_settings, "suppressions", "list", "--workspace", nope), f"no workspace {nope!r}"),
        (run_tripmail(stack_settings, "suppressions", "add", "--workspace", nope, good), f"no workspace {nope!r}"),
        (run_tripmail(stack_settings, "suppressions", "remove", "--workspace", nope, good), f"no workspace {nope!r}"),
        (
            run_tripmail(stack_settings, "suppressions", "add", "--workspace", tenant.key, good, "not-an-address"),
            "'not-an-address' is not a valid email address",
        ),
        (
            run_tripmail(stack_settings, "suppressions", "remove", "--workspace", tenant.key, "x@localhost"),
            "'x@localhost' is not a valid email address",
        ),
    ]
    for done, message in refusals:
        assert done.returncode != 0 and message in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert stored(db, tenant) == {}
