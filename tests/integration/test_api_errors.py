"""Bad requests get RFC 9457 problem+json that names the field, never a 500."""

import httpx
from sqlalchemy.orm import Session, sessionmaker

from tests.builders import make_token
from tests.integration.conftest import Tenant

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
