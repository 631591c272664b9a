"""Bad requests get RFC 9457 problem+json that names the field, never a 500."""

import httpx
import pytest
import redis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.enqueue import claimed_by, dedupe_key
from tests.support.builders import Tenant, apply_spec, make_token, password_reset_spec
from tests.support.polling import wait_until
from tripmail.config import Settings
from tripmail.ids import utcnow
from tripmail.models import ApiToken, Contact, Workspace
from tripmail.schemas.trigger import Audience, TriggerRequest
from tripmail.setup.tokens import hash_secret

VALID = {"event": "FORGOT_PASSWORD", "contact": {"email": "ann@example.com"}}


def post(api_url: str, body: object, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{api_url}/v1/events", json=body, headers=headers, timeout=10)


def assert_problem(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, object] = response.json()
    assert problem["status"] == status
    assert isinstance(problem["type"], str) and isinstance(problem["detail"], str)
    return problem


def test_missing_token_is_401(api_url: str) -> None:
    problem = assert_problem(post(api_url, VALID, {}), 401)
    assert "Bearer" in str(problem["detail"])


def test_unknown_token_is_401(api_url: str) -> None:
    assert_problem(post(api_url, VALID, {"Authorization": "Bearer tm_live_not-a-real-token"}), 401)


def test_token_without_the_scope_is_403(api_url: str, tenant: Tenant, db: sessionmaker[Session]) -> None:
    with db.begin() as session:
        reader = make_token(session, tenant.key, ["events:read"])
    problem = assert_problem(post(api_url, VALID, {"Authorization": f"Bearer {reader}"}), 403)
    assert "events:write" in str(problem["detail"])


def test_a_token_created_while_the_api_runs_works_at_once(
    api_url: str, tenant: Tenant, db: sessionmaker[Session]
) -> None:
    assert post(api_url, VALID, {"Authorization": f"Bearer {tenant.token}"}).status_code == 202
    with db.begin() as session:
        fresh = make_token(session, tenant.key)
    response = post(api_url, VALID, {"Authorization": f"Bearer {fresh}"})
    assert response.status_code == 202, response.text


def test_a_revoked_token_is_refused(api_url: str, tenant: Tenant, db: sessionmaker[Session]) -> None:
    headers = {"Authorization": f"Bearer {tenant.token}"}
    assert post(api_url, VALID, headers).status_code == 202
    with db.begin() as session:
        token = session.scalars(select(ApiToken).where(ApiToken.secret_sha256 == hash_secret(tenant.token))).one()
        token.revoked_at = utcnow()
    # The api keeps a live token for TRIPMAIL_SETUP_CACHE_S (2 s): refused once that has passed.
    wait_until(lambda: post(api_url, VALID, headers).status_code == 401, what="the revoked token refused")


def test_invalid_body_is_422_naming_each_field(api_url: str, tenant: Tenant) -> None:
    body = {"event": "", "contact": {"email": "not-an-email"}, "data": []}
    problem = assert_problem(post(api_url, body, {"Authorization": f"Bearer {tenant.token}"}), 422)
    fields = {error["field"] for error in problem["errors"]}  # type: ignore[attr-defined]
    assert fields == {"event", "contact.email", "data"}
    assert "contact.email" in str(problem["detail"])


def test_contact_without_identifier_is_422(api_url: str, tenant: Tenant) -> None:
    body = {"event": "X", "contact": {"fields": {"a": 1}}}
    problem = assert_problem(post(api_url, body, {"Authorization": f"Bearer {tenant.token}"}), 422)
    assert "contact" in str(problem["detail"]) and "email" in str(problem["detail"])


def test_malformed_json_is_422(api_url: str, tenant: Tenant) -> None:
    response = httpx.post(
        f"{api_url}/v1/events",
        content=b'{"event": ',
        headers={"Authorization": f"Bearer {tenant.token}", "Content-Type": "application/json"},
        timeout=10,
    )
    problem = assert_problem(response, 422)
    assert problem["field"] == "body"
    assert str(problem["detail"]).startswith("body: not valid JSON at character 10")


def test_healthz_checks_redis_and_database(api_url: str) -> None:
    response = httpx.get(f"{api_url}/healthz", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "redis": "ok", "database": "ok"}


def test_openapi_documents_the_events_endpoint(api_url: str) -> None:
    spec = httpx.get(f"{api_url}/openapi.json", timeout=10).json()
    assert "/v1/events" in spec["paths"]
    assert httpx.get(f"{api_url}/docs", timeout=10).status_code == 200


def test_non_finite_numbers_are_422_naming_where(api_url: str, tenant: Tenant) -> None:
    response = httpx.post(
        f"{api_url}/v1/events",
        content=b'{"event": "X", "contact": {"email": "a@example.com"}, "data": {"items": [1, NaN]}}',
        headers={"Authorization": f"Bearer {tenant.token}", "Content-Type": "application/json"},
        timeout=10,
    )
    problem = assert_problem(response, 422)
    assert "data.items.1: numbers must be finite" in str(problem["detail"])


def test_wrong_method_is_405_with_allow(api_url: str) -> None:
    response = httpx.put(f"{api_url}/v1/events", timeout=10)
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"
    assert response.headers["content-type"] == "application/problem+json"


def test_batch_item_that_is_not_an_object_is_rejected_alone(api_url: str, tenant: Tenant) -> None:
    events = [{"event": "x", "contact": {"email": "a@example.com"}}, 5]
    response = httpx.post(
        f"{api_url}/v1/events/batch", json={"events": events}, headers={"Authorization": f"Bearer {tenant.token}"}
    )
    assert response.status_code == 202, response.text
    assert [item["status"] for item in response.json()["results"]] == ["queued", "rejected"]


def test_dedupe_claim_lasts_the_event_types_window_once_queued(
    api_url: str, tenant: Tenant, stack_settings: Settings, db: sessionmaker[Session]
) -> None:
    body = {"event": "FORGOT_PASSWORD", "key": "ttl-1", "contact": {"email": "a@example.com"}}
    answer = httpx.post(
        f"{api_url}/v1/events", json=body, headers={"Authorization": f"Bearer {tenant.token}"}, timeout=10
    )
    with db() as session:
        workspace_id = session.scalars(select(Workspace.id).where(Workspace.key == tenant.key)).one()
    trigger = TriggerRequest(
        workspace_id=workspace_id, event="FORGOT_PASSWORD", key="ttl-1", audience=Audience(email="a@example.com")
    )
    client = redis.Redis.from_url(stack_settings.redis_url, decode_responses=True)
    claimed = client.get(dedupe_key(trigger))
    assert isinstance(claimed, str) and claimed_by(claimed)[0] == answer.json()["id"]
    assert 24 * 3600 - 60 < client.ttl(dedupe_key(trigger)) <= 24 * 3600


@pytest.mark.usefixtures("workers")  # the contact is stored by a worker
def test_declared_contact_fields_are_typed_or_refused(api_url: str, tenant: Tenant, db: sessionmaker[Session]) -> None:
    with db.begin() as session:
        apply_spec(session, password_reset_spec(tenant.key) | {"contact_fields": [{"name": "age", "type": "number"}]})
    headers = {"Authorization": f"Bearer {tenant.token}"}
    bad = {"event": "x", "contact": {"email": "typed@example.com", "fields": {"age": "old", "nick": "Al"}}}
    problem = assert_problem(httpx.post(f"{api_url}/v1/events", json=bad, headers=headers, timeout=10), 422)
    assert problem["field"] == "contact.fields.age"
    good = {"event": "x", "contact": {"email": "typed@example.com", "fields": {"age": "42", "nick": "Al"}}}
    assert httpx.post(f"{api_url}/v1/events", json=good, headers=headers, timeout=10).status_code == 202

    def stored() -> dict[str, object] | None:
        with db() as session:
            contact = session.scalars(select(Contact).where(Contact.email == "typed@example.com")).one_or_none()
            return contact.fields if contact else None

    assert wait_until(stored, what="the contact") == {"age": 42, "nick": "Al"}


def test_invalid_phone_is_422_naming_contact_phone(api_url: str, tenant: Tenant) -> None:
    body = {"event": "x", "contact": {"phone": "12345"}}
    response = httpx.post(f"{api_url}/v1/events", json=body, headers={"Authorization": f"Bearer {tenant.token}"})
    problem = assert_problem(response, 422)
    assert problem["field"] == "contact.phone"
    assert "international format" in str(problem["detail"])


@pytest.mark.parametrize(
    "body",
    [
        b'{"event": "FORGOT_PASSWORD", "contact": {"email": "fast@example.com", "fields": {"a": 1}}, "data": {"b": 2}}',
        b'{"event": "", "contact": {"email": "not-an-email"}, "data": []}',
        b'{"event": "X", "contact": {"email": "a@example.com"}, "data": {"items": [1, NaN]}}',
        b'{"event": "X", "contact": {"phone": "12345"}}',
        b'{"event": "X", "contact": {}, "extra": 1}',
        b'{"event": ',
        b"[1, 2]",
        b"",
        '{"event": "X", "contact": {"email": "a@example.com"}}'.encode("utf-16"),
    ],
)
@pytest.mark.parametrize("token", ["tenant", "unknown", None])
def test_plain_json_is_answered_as_fastapi_answers_any_other_json(
    api_url: str, tenant: Tenant, body: bytes, token: str | None
) -> None:
    """The route takes plain application/json itself and gives other requests to FastAPI: both answer alike."""
    secret = {"tenant": tenant.token, "unknown": "tm_live_not-a-real-token", None: None}[token]
    auth = {"Authorization": f"Bearer {secret}"} if secret else {}

    def send(content_type: str) -> httpx.Response:
        headers = auth | {"Content-Type": content_type}
        return httpx.post(f"{api_url}/v1/events", content=body, headers=headers, timeout=10)

    own, fastapi = send("application/json"), send("application/json; charset=utf-8")
    assert (own.status_code, own.headers["content-type"]) == (fastapi.status_code, fastapi.headers["content-type"])
    if own.status_code == 202:
        assert own.json().keys() == fastapi.json().keys()
        assert own.json() | {"id": None} == fastapi.json() | {"id": None}
    else:
        assert own.json() == fastapi.json()
