"""Tenancy and tokens (issue 9): a token of workspace A never reaches workspace B, and tokens are kept safely.

Every route that reads or references a resource by id is listed here against the app's own /openapi.json, so a
new route fails `test_every_route_is_covered` until it is given a case (or a reason it references nothing).
"""

import http.client
import json
import re
import string
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from tests.support import envelopes
from tests.support.api_connections import connections_to_each_process
from tests.support.builders import apply_spec, make_token, password_reset_spec, unique_workspace_key
from tests.support.polling import wait_until
from tests.support.stack import service_env, start_server, stop
from tripmail.config import Settings
from tripmail.ids import utcnow
from tripmail.models import ApiToken, Automation, EventType, Workspace
from tripmail.setup.spec import ApplyFile
from tripmail.setup.tokens import KNOWN_SCOPES, SECRET_PREFIX, find_token, hash_secret

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True, scope="session")

ALL_SCOPES = sorted(KNOWN_SCOPES)
B_EVENT = "ONLY_OTHER"
B_TEMPLATE = "b_only"
B_SUPPRESSED = "on-the-list@example.com"
B_ENDPOINT = "https://b-only.example/hooks"


@dataclass(frozen=True)
class World:
    """Workspace A (the caller) and workspace B (the owner of every id A asks for)."""

    a_key: str
    a_token: str  # every scope
    b_key: str
    b_token: str  # every scope
    b_email: str
    b_contact_id: str
    b_event_id: str
    b_event_type_uuid: str
    b_automation_id: int
    b_automation_name: str
    b_endpoint_id: int

    def b_markers(self) -> list[str]:
        """What of B an answer to A must never carry (the id A itself sent may be echoed)."""
        return [self.b_key, self.b_email, self.b_automation_name, f"{self.b_key}.example.com", B_ENDPOINT]


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def world(api_url: str, workers: list[str], db: sessionmaker[Session]) -> World:
    a_key, b_key = unique_workspace_key("ten-a"), unique_workspace_key("ten-b")
    b_spec = password_reset_spec(b_key, event=B_EVENT)
    b_spec["templates"].append({"key": B_TEMPLATE, "subject": "B secret subject", "text": "b only"})
    b_spec["automations"][0]["name"] = f"B automation {b_key}"
    with db.begin() as session:
        apply_spec(session, password_reset_spec(a_key))
        apply_spec(session, b_spec)
        a_token = make_token(session, a_key, ALL_SCOPES)
        b_token = make_token(session, b_key, ALL_SCOPES)
        b_id = session.scalars(select(Workspace.id).where(Workspace.key == b_key)).one()
        automation = session.scalars(select(Automation).where(Automation.workspace_id == b_id)).one()
        b_automation_id, b_automation_name = automation.id, automation.name
        b_type_uuid = session.scalars(
            select(EventType.uuid).where(EventType.workspace_id == b_id, EventType.key == B_EVENT)
        ).one()
    b_email = f"{b_key}@example.com"
    contact = httpx.post(
        f"{api_url}/compat/emailsendx/api/v1/contacts", json={"email": b_email}, headers=_headers(b_token), timeout=10
    )
    assert contact.status_code == 200, contact.text
    event = httpx.post(
        f"{api_url}/v1/events",
        json={"event": B_EVENT, "contact": {"email": b_email}},
        headers=_headers(b_token),
        timeout=10,
    )
    assert event.status_code == 202, event.text
    b_event_id = event.json()["id"]
    wait_until(
        lambda: (
            httpx.get(f"{api_url}/v1/events/{b_event_id}", headers=_headers(b_token), timeout=10).status_code == 200
        ),
        timeout=15,
        what="B's event recorded",
    )
    suppressed = httpx.post(
        f"{api_url}/v1/suppressions", json={"email": B_SUPPRESSED}, headers=_headers(b_token), timeout=10
    )
    assert suppressed.status_code == 201, suppressed.text
    endpoint = httpx.post(
        f"{api_url}/v1/webhook-endpoints", json={"url": B_ENDPOINT}, headers=_headers(b_token), timeout=10
    )
    assert endpoint.status_code == 201, endpoint.text
    return World(
        a_key=a_key,
        a_token=a_token,
        b_key=b_key,
        b_token=b_token,
        b_email=b_email,
        b_contact_id=contact.json()["data"]["id"],
        b_event_id=b_event_id,
        b_event_type_uuid=b_type_uuid,
        b_automation_id=b_automation_id,
        b_automation_name=b_automation_name,
        b_endpoint_id=endpoint.json()["id"],
    )


@dataclass(frozen=True)
class Case:
    """One route: how to call it with a token and an id, the scopes it needs, and its error envelope."""

    method: str
    path: str  # as in /openapi.json
    scopes: tuple[str, ...]
    call: Callable[[str, str, World, str], httpx.Response]  # (api_url, token, world, id) → response
    b_id: Callable[[World], str] | None  # the B-owned id this route references; None: it references none
    missing: str  # an id that exists nowhere
    not_found: int = 404
    # Whether a refusal is in the route's own envelope, whatever its status.
    envelope: Callable[[httpx.Response], bool] = lambda r: _problem(r)


def _problem(response: httpx.Response) -> bool:
    body = response.json()
    return response.headers["content-type"] == "application/problem+json" and body["status"] == response.status_code


def _in(envelope: Callable[[Any, int], bool]) -> Callable[[httpx.Response], bool]:
    return lambda response: envelope(response.json(), response.status_code)


_cocomail_error = _in(envelopes.cocomail)
_altcraft_error = _in(envelopes.altcraft)
_esputnik_error = _in(envelopes.esputnik)
_bunce_error = _in(envelopes.bunce)
_emailsendx_error = _in(envelopes.emailsendx)


def _events_get(url: str, token: str, w: World, event_id: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/events/{event_id}", headers=_headers(token), timeout=10)


def _events_list(url: str, token: str, w: World, contact_id: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/events", params={"contact": contact_id}, headers=_headers(token), timeout=10)


def _events_post(url: str, token: str, w: World, _: str) -> httpx.Response:
    body = {"event": "FORGOT_PASSWORD", "contact": {"email": "a@example.com"}}
    return httpx.post(f"{url}/v1/events", json=body, headers=_headers(token), timeout=10)


def _events_batch(url: str, token: str, w: World, _: str) -> httpx.Response:
    body = {"events": [{"event": "FORGOT_PASSWORD", "contact": {"email": "a@example.com"}}]}
    return httpx.post(f"{url}/v1/events/batch", json=body, headers=_headers(token), timeout=10)


def _preview(url: str, token: str, w: World, key: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/templates/{key}/preview", json={}, headers=_headers(token), timeout=10)


def _cocomail(url: str, token: str, w: World, identifier: str) -> httpx.Response:
    body = {"email": "a@example.com", "identifier": identifier}
    return httpx.post(f"{url}/compat/cocomail/events/trigger", json=body, headers={"Authorization": token}, timeout=10)


def _altcraft(url: str, token: str, w: World, automation_id: str) -> httpx.Response:
    body = {"token": token, "id": int(automation_id), "matching": "email", "email": w.b_email}
    return httpx.post(f"{url}/compat/altcraft/api/v1.1/campaigns/triggers/start/", json=body, timeout=10)


def _esputnik(version: str) -> Callable[[str, str, World, str], httpx.Response]:
    def call(url: str, token: str, w: World, contact_id: str) -> httpx.Response:
        body = {"eventTypeKey": "FORGOT_PASSWORD", "params": [{"name": "contactId", "value": contact_id}]}
        return httpx.post(f"{url}/compat/esputnik/api/{version}/event", json=body, headers=_headers(token), timeout=10)

    return call


def _bunce(url: str, token: str, w: World, event_uuid: str) -> httpx.Response:
    body = {"event_id": event_uuid, "payload": {"email": "a@example.com"}}
    return httpx.post(
        f"{url}/compat/bunce/v1/events/trigger", json=body, headers={"X-Authorization": token}, timeout=10
    )


def _emailsendx_upsert(url: str, token: str, w: World, _: str) -> httpx.Response:
    return httpx.post(
        f"{url}/compat/emailsendx/api/v1/contacts", json={"email": "a@example.com"}, headers=_headers(token), timeout=10
    )


def _emailsendx_event(url: str, token: str, w: World, contact_id: str) -> httpx.Response:
    return httpx.post(
        f"{url}/compat/emailsendx/api/v1/contacts/{contact_id}/events",
        json={"name": "FORGOT_PASSWORD"},
        headers=_headers(token),
        timeout=10,
    )


def _suppressions_list(url: str, token: str, w: World, email: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/suppressions", params={"email": email}, headers=_headers(token), timeout=10)


def _suppressions_post(url: str, token: str, w: World, _: str) -> httpx.Response:
    return httpx.post(f"{url}/v1/suppressions", json={"email": "a@example.com"}, headers=_headers(token), timeout=10)


def _suppressions_delete(url: str, token: str, w: World, email: str) -> httpx.Response:
    answer = httpx.delete(f"{url}/v1/suppressions/{email}", headers=_headers(token), timeout=10)
    if answer.status_code == 204:
        # Put back, so the call with A's token that follows B's finds B's entry there.
        put_back = httpx.post(f"{url}/v1/suppressions", json={"email": email}, headers=_headers(token), timeout=10)
        assert put_back.status_code == 201, put_back.text
    return answer


def _bounce_webhook(provider: str) -> Callable[[str, str, World, str], httpx.Response]:
    """POST a provider's delivery event (nothing to record) with the token as the Basic password, as a provider's
    webhook URL carries it."""
    body = [{"event": "delivered", "email": "a@example.com"}] if provider == "sendgrid" else {"RecordType": "Delivery"}
    bodies = {"ses": {"Type": "UnsubscribeConfirmation"}, "mailgun": {"event-data": {"event": "delivered"}}}

    def call(url: str, token: str, w: World, _: str) -> httpx.Response:
        return httpx.post(
            f"{url}/v1/bounce-webhooks/{provider}", json=bodies.get(provider, body), auth=("t", token), timeout=10
        )

    return call


def _endpoints_list(url: str, token: str, w: World, _: str) -> httpx.Response:
    return httpx.get(f"{url}/v1/webhook-endpoints", headers=_headers(token), timeout=10)


def _endpoints_post(url: str, token: str, w: World, _: str) -> httpx.Response:
    # Disabled: it is sent nothing of the events the other cases send.
    body = {"url": "https://a.example/hooks", "enabled": False}
    return httpx.post(f"{url}/v1/webhook-endpoints", json=body, headers=_headers(token), timeout=10)


def _endpoints_delete(url: str, token: str, w: World, endpoint_id: str) -> httpx.Response:
    return httpx.delete(f"{url}/v1/webhook-endpoints/{endpoint_id}", headers=_headers(token), timeout=10)


MISSING_UUID = str(uuid.UUID(int=1))
# What each route needs is the README's table of scopes: sending mail needs events:write, and an answer that shows
# a contact's stored address or fields needs contacts:read as well.
CASES = [
    # One event shows its body and its messages' recipients.
    Case("GET", "/v1/events/{event_id}", ("events:read", "contacts:read"), _events_get, lambda w: w.b_event_id,
         MISSING_UUID),
    # A list filtered by B's contact is not a 404: it is an empty page (checked in its own test). It shows contact
    # ids only.
    Case("GET", "/v1/events", ("events:read",), _events_list, None, ""),
    # Native ingest names events by key and contacts by email/phone/external id, always within the token's own
    # workspace: there is no id of another workspace to reference.
    Case("POST", "/v1/events", ("events:write",), _events_post, None, ""),
    Case("POST", "/v1/events/batch", ("events:write",), _events_batch, None, ""),
    # The contact a preview renders with is the one in the request, never a stored one.
    Case("POST", "/v1/templates/{key}/preview", ("templates:read",), _preview, lambda w: B_TEMPLATE, "no_such_tpl"),
    # A list looked up by B's address is not a 404: it is an empty page (test_suppressions checks it).
    Case("GET", "/v1/suppressions", ("contacts:read",), _suppressions_list, None, ""),
    # Adding names an address within the token's own workspace.
    Case("POST", "/v1/suppressions", ("contacts:write",), _suppressions_post, None, ""),
    Case("DELETE", "/v1/suppressions/{email}", ("contacts:write",), _suppressions_delete, lambda w: B_SUPPRESSED,
         "nobody@example.com"),
    # A provider's report names a message by its Message-ID or return path, matched within the token's workspace
    # only: one about B's message is unmatched for A's token (test_provider_webhooks checks it).
    *(Case("POST", f"/v1/bounce-webhooks/{provider}", ("bounces:write",), _bounce_webhook(provider), None, "")
      for provider in ("ses", "postmark", "mailgun", "sendgrid")),
    # Listing and registering reach the token's own workspace's endpoints only.
    Case("GET", "/v1/webhook-endpoints", ("webhooks:read",), _endpoints_list, None, ""),
    Case("POST", "/v1/webhook-endpoints", ("webhooks:write",), _endpoints_post, None, ""),
    Case("DELETE", "/v1/webhook-endpoints/{endpoint_id}", ("webhooks:write",), _endpoints_delete,
         lambda w: str(w.b_endpoint_id), "999999999"),
    # cocomail's answer shows the stored contact.
    Case("POST", "/compat/cocomail/events/trigger", ("events:write", "contacts:read"), _cocomail, lambda w: B_EVENT,
         "NO_SUCH_EVENT", envelope=_cocomail_error),
    Case("POST", "/compat/altcraft/api/v1.1/campaigns/triggers/start/", ("events:write",), _altcraft,
         lambda w: str(w.b_automation_id), "999999999", envelope=_altcraft_error),
    # An esputnik contactId the token's workspace does not hold (the platform's own ids, or B's) addresses no one
    # and is no 404 (test_esputnik checks that B's contact is not reached).
    *(Case("POST", f"/compat/esputnik/api/{version}/event", ("events:write",), _esputnik(version), None, "",
           envelope=_esputnik_error) for version in ("v1", "v2")),
    # bunce answers every parameter error, an unknown event_id included, with 422 naming the field (seed 003).
    Case("POST", "/compat/bunce/v1/events/trigger", ("events:write",), _bunce, lambda w: w.b_event_type_uuid,
         MISSING_UUID, not_found=422, envelope=_bunce_error),
    # Upsert names the contact by email within the token's workspace; its answer shows the stored contact.
    Case("POST", "/compat/emailsendx/api/v1/contacts", ("contacts:write", "contacts:read"), _emailsendx_upsert, None,
         "", envelope=_emailsendx_error),
    Case("POST", "/compat/emailsendx/api/v1/contacts/{contact_id}/events", ("events:write",), _emailsendx_event,
         lambda w: w.b_contact_id, MISSING_UUID, envelope=_emailsendx_error),
]  # fmt: skip

# Routes with no API token: each is authorised by a secret of its own, not a workspace's token.
NO_TOKEN = {
    ("GET", "/healthz"): "no data",
    ("GET", "/livez"): "no data",
    ("GET", "/readyz"): "no data",
    ("GET", "/unsubscribe/{token}"): "a signed per-message token",
    ("POST", "/unsubscribe/{token}"): "a signed per-message token",
    ("GET", "/compat/altcraft/trg/{link}/{value}"): "the automation's link secret (test_altcraft_link_secret_*)",
    ("POST", "/compat/altcraft/trg/{link}/{value}"): "the automation's link secret (test_altcraft_link_secret_*)",
}


def _id(case: Case) -> str:
    return f"{case.method} {case.path}"


def test_every_route_is_covered(api_url: str) -> None:
    spec = httpx.get(f"{api_url}/openapi.json", timeout=10).json()
    routes = {(method.upper(), path) for path, methods in spec["paths"].items() for method in methods}
    covered = {(case.method, case.path) for case in CASES} | NO_TOKEN.keys()
    assert routes == covered, f"not covered: {routes - covered}; gone: {covered - routes}"


@pytest.mark.parametrize("case", [c for c in CASES if c.b_id is not None], ids=_id)
def test_a_token_of_a_gets_404_for_bs_ids(api_url: str, world: World, case: Case) -> None:
    assert case.b_id is not None
    b_id = case.b_id(world)
    # A's answer is the answer for an id that exists nowhere, and B's own token reaches it (so the id is real); A
    # asks first, so a route that deletes finds it there.
    answer = case.call(api_url, world.a_token, world, b_id)
    assert case.call(api_url, world.b_token, world, b_id).status_code != case.not_found
    nowhere = case.call(api_url, world.a_token, world, case.missing)
    assert answer.status_code == case.not_found, answer.text
    assert case.envelope(answer), answer.text
    assert (nowhere.status_code, nowhere.headers["content-type"]) == (case.not_found, answer.headers["content-type"])
    assert answer.json().keys() == nowhere.json().keys()
    for marker in world.b_markers():
        assert marker not in answer.text


def test_a_list_filtered_by_bs_contact_is_empty_for_a(api_url: str, world: World) -> None:
    for params in ({"contact": world.b_contact_id}, {"type": B_EVENT}, {}):
        answer = httpx.get(f"{api_url}/v1/events", params=params, headers=_headers(world.a_token), timeout=10)
        assert answer.status_code == 200, answer.text
        assert world.b_event_id not in answer.text and world.b_contact_id not in answer.text
        for marker in world.b_markers():
            assert marker not in answer.text
    mine = httpx.get(
        f"{api_url}/v1/events", params={"contact": world.b_contact_id}, headers=_headers(world.b_token), timeout=10
    )
    assert world.b_event_id in mine.text


@pytest.mark.parametrize(
    ("case", "scope"),
    [(case, scope) for case in CASES for scope in case.scopes],
    ids=lambda v: _id(v) if isinstance(v, Case) else v,
)
def test_a_token_without_a_scope_of_the_route_gets_403_in_its_envelope(
    api_url: str, world: World, db: sessionmaker[Session], case: Case, scope: str
) -> None:
    with db.begin() as session:
        lacking = make_token(session, world.a_key, [other for other in ALL_SCOPES if other != scope])
    answer = case.call(api_url, lacking, world, case.missing or "x")
    assert answer.status_code == 403, answer.text
    assert case.envelope(answer), answer.text
    assert f"lacks the {scope!r} scope" in answer.text


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_a_token_with_only_the_routes_scopes_is_not_refused(
    api_url: str, world: World, db: sessionmaker[Session], case: Case
) -> None:
    with db.begin() as session:
        only = make_token(session, world.a_key, list(case.scopes))
    answer = case.call(api_url, only, world, case.missing or "x")
    # The route does its work, or answers what the id or body is worth: neither 401 nor 403.
    assert answer.status_code not in (401, 403), answer.text
    assert "scope" not in answer.text


def _revoke(db: sessionmaker[Session], secret: str) -> None:
    """revoked_at set in the database alone, with no Redis marker: enough for a token no api process holds."""
    with db.begin() as session:
        session.scalars(
            select(ApiToken).where(ApiToken.secret_sha256 == hash_secret(secret))
        ).one().revoked_at = utcnow()


def test_a_revoked_token_not_seen_lately_is_refused_on_its_next_request(
    api_url: str, world: World, db: sessionmaker[Session]
) -> None:
    with db.begin() as session:
        secret = make_token(session, world.a_key, ALL_SCOPES)
    _revoke(db, secret)
    for case in CASES:
        answer = case.call(api_url, secret, world, case.missing or "x")
        assert answer.status_code == 401, f"{_id(case)}: {answer.text}"


@pytest.mark.parametrize("per_minute", [6000, 0], ids=["marker-in-the-limit-script", "no-limit-marker-alone"])
def test_a_revoked_token_in_use_is_refused_on_its_next_request_by_every_api_process(
    world: World, db: sessionmaker[Session], stack_settings: Settings, tmp_path: Path, per_minute: int
) -> None:
    """`tripmail token revoke` against an api of two processes that both hold the token in their cache."""
    # Tokens kept for 10 minutes: without the marker, both processes would accept the token all through the test.
    settings = stack_settings.model_copy(update={"rate_limit_per_minute": per_minute, "setup_cache_s": 600})
    with db.begin() as session:
        secret = make_token(session, world.a_key, ALL_SCOPES)
        token = find_token(session, secret)
        assert token is not None
        token_id = token.id
    api, api_url = start_server(
        ["api", "--workers", "2"], service_env(settings), tmp_path / "api.log", probe="/healthz", status=200
    )
    try:
        connections = connections_to_each_process(psutil.Process(api.pid), int(api_url.rsplit(":", 1)[1]))
        for connection in connections:  # each process reads the token and keeps it
            for _ in range(2):
                assert _event_on(connection, secret)[0] == 202

        revoked = subprocess.run(
            [sys.executable, "-m", "tripmail", "token", "revoke", str(token_id)],
            env=service_env(settings),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert revoked.returncode == 0 and revoked.stderr == "", revoked.stderr
        assert revoked.stdout.startswith(f"token {token_id} of workspace {world.a_key} revoked at ")

        unknown = _event_on(connections[0], SECRET_PREFIX + "unknown")
        assert unknown[:2] == (401, "application/problem+json")
        for connection in connections:
            assert _event_on(connection, secret) == unknown
            # The entry is gone: the next request reads the database, which says revoked too.
            assert _event_on(connection, secret) == unknown
    finally:
        stop(api)


def _event_on(connection: http.client.HTTPConnection, token: str) -> tuple[int, str | None, object]:
    """POST /v1/events over this kept-alive connection (to one api process): status, content type and body."""
    body = json.dumps({"event": "FORGOT_PASSWORD", "contact": {"email": "a@example.com"}})
    connection.request("POST", "/v1/events", body=body, headers=_headers(token) | {"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.getheader("Content-Type"), json.loads(response.read())


def _sqlite_files(settings: Settings) -> list[Path]:
    database = make_url(settings.database_url).database
    assert database
    return [path for suffix in ("", "-wal", "-journal") if (path := Path(database + suffix)).exists()]


def test_tokens_are_stored_only_as_sha256(world: World, db: sessionmaker[Session], stack_settings: Settings) -> None:
    with db() as session:
        rows = session.scalars(select(ApiToken)).all()
        mine = session.scalars(select(ApiToken).where(ApiToken.secret_sha256 == hash_secret(world.a_token))).one()
    assert rows
    for row in rows:
        assert re.fullmatch(r"[0-9a-f]{64}", row.secret_sha256)
        # The prefix shown to tell tokens apart holds 4 of the secret's 43 random characters.
        assert row.prefix.startswith(SECRET_PREFIX) and len(row.prefix) == len(SECRET_PREFIX) + 4
    assert mine.secret_sha256 == hash_secret(world.a_token)
    for column in ApiToken.__table__.columns:
        assert world.a_token not in str(getattr(mine, column.key))
    # Nor anywhere in the database file: no other table or log kept the secret.
    for path in _sqlite_files(stack_settings):
        content = path.read_bytes()
        for secret in (world.a_token, world.b_token):
            assert secret.encode() not in content, path
            assert secret[len(SECRET_PREFIX) :].encode() not in content, path


def test_token_secrets_carry_256_random_bits(db: sessionmaker[Session], world: World) -> None:
    random_part = world.a_token.removeprefix(SECRET_PREFIX)
    assert len(random_part) == 43 and set(random_part) <= set(string.ascii_letters + string.digits + "-_")


def test_find_token_compares_digests_with_compare_digest(
    db: sessionmaker[Session], world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, str]] = []

    def recording(a: str, b: str) -> bool:
        calls.append((a, b))
        return False

    monkeypatch.setattr("tripmail.setup.tokens.hmac.compare_digest", recording)
    with db() as session:
        # The row matched by the index is refused when the constant-time compare says no: the compare decides.
        assert find_token(session, world.a_token) is None
    assert calls == [(hash_secret(world.a_token), hash_secret(world.a_token))]


def _links(db: sessionmaker[Session]) -> list[str]:
    with db() as session:
        return [link for link in session.scalars(select(Automation.link)) if link is not None]


def test_altcraft_link_secret_generated_by_apply_has_at_least_128_bits(db: sessionmaker[Session], world: World) -> None:
    with db() as session:
        b_id = session.scalars(select(Workspace.id).where(Workspace.key == world.b_key)).one()
        link = session.scalars(select(Automation.link).where(Automation.workspace_id == b_id)).one()
    assert link is not None
    # Lower-case hex from secrets.token_hex: 4 bits a character.
    assert re.fullmatch(r"[0-9a-f]+", link) and len(link) * 4 >= 128
    assert len(set(_links(db))) == len(_links(db))


@pytest.mark.usefixtures("backend")
def test_altcraft_link_secret_given_in_a_spec_has_at_least_128_bits() -> None:
    spec = password_reset_spec("ten-link")
    with pytest.raises(ValueError, match="link"):
        ApplyFile.model_validate(spec | {"automations": [spec["automations"][0] | {"link": "0123456789abcdef"}]})
    ApplyFile.model_validate(spec | {"automations": [spec["automations"][0] | {"link": "0123456789abcdef" * 2}]})
