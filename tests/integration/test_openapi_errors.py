"""A refusal is declared in /openapi.json: its status, its content type and the shape of its body.

Before, each route declared only its success and FastAPI's own 422 (`{"detail": [...]}` as application/json),
while the api answers problem+json on its own routes and each dialect's envelope under /compat: a client generated
from the document could not read a single refusal (schemathesis found it on every operation).
"""

from typing import Any

import httpx
import jsonschema_rs
import pytest

from tests.support.builders import Tenant

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True, scope="session")

JUNK = "tm_live_not-a-real-token"
EVENT = {"event": "FORGOT_PASSWORD", "contact": {"email": "ann@example.com"}}

# (method, OpenAPI path, concrete path, headers, JSON body, the status a user sees); "{token}" is the tenant's.
CASES: list[tuple[str, str, str, dict[str, str], Any, int]] = [
    ("POST", "/v1/events", "/v1/events", {}, EVENT, 401),
    ("POST", "/v1/events", "/v1/events", {"Authorization": "Bearer {token}"}, {"event": ""}, 422),
    (
        "POST",
        "/v1/templates/{key}/preview",
        "/v1/templates/reset/preview",
        {"Authorization": "Bearer {token}"},
        {},
        403,
    ),
    ("POST", "/v1/events/batch", "/v1/events/batch", {"Authorization": f"Bearer {JUNK}"}, {"events": [EVENT]}, 401),
    ("GET", "/v1/events/{event_id}", "/v1/events/nope", {"Authorization": "Bearer {token}"}, None, 403),
    ("GET", "/unsubscribe/{token}", "/unsubscribe/nope", {}, None, 404),
    ("POST", "/compat/cocomail/events/trigger", "/compat/cocomail/events/trigger", {}, {}, 401),
    (
        "POST",
        "/compat/cocomail/events/trigger",
        "/compat/cocomail/events/trigger",
        {"Authorization": "{token}"},
        {"email": "ann@example.com", "identifier": "NOPE"},
        403,  # the tenant's token lacks contacts:read, which the answer's stored contact needs
    ),
    (
        "POST",
        "/compat/altcraft/api/v1.1/campaigns/triggers/start/",
        "/compat/altcraft/api/v1.1/campaigns/triggers/start/",
        {},
        {"token": JUNK, "id": 1, "email": "ann@example.com"},
        401,
    ),
    ("GET", "/compat/altcraft/trg/{link}/{value}", f"/compat/altcraft/trg/{'0' * 48}/ann@example.com", {}, None, 404),
    ("POST", "/compat/esputnik/api/v2/event", "/compat/esputnik/api/v2/event", {}, {}, 401),
    (
        "POST",
        "/compat/esputnik/api/v2/event",
        "/compat/esputnik/api/v2/event",
        {"Authorization": "Bearer {token}"},
        {},
        400,
    ),
    ("POST", "/compat/bunce/v1/events/trigger", "/compat/bunce/v1/events/trigger", {}, {}, 401),
    (
        "POST",
        "/compat/bunce/v1/events/trigger",
        "/compat/bunce/v1/events/trigger",
        {"X-Authorization": "{token}"},
        {},
        422,
    ),
    ("POST", "/compat/emailsendx/api/v1/contacts", "/compat/emailsendx/api/v1/contacts", {}, {}, 401),
    ("POST", "/compat/emailsendx/api/v1/contacts", "/compat/emailsendx/api/v1/contacts", {"x-api-key": JUNK}, {}, 401),
    (
        "POST",
        "/compat/emailsendx/api/v1/contacts",
        "/compat/emailsendx/api/v1/contacts",
        {"x-api-key": "{token}"},
        {},
        403,  # the tenant's token lacks contacts:write
    ),
    (
        "POST",
        "/compat/bunce/v1/events/trigger",
        "/compat/bunce/v1/events/trigger",
        {"Authorization": "Bearer {token}"},
        {},
        422,
    ),
    (
        "POST",
        "/compat/altcraft/api/v1.1/campaigns/triggers/start/",
        "/compat/altcraft/api/v1.1/campaigns/triggers/start/",
        {"Authorization": f"Bearer {JUNK}"},
        {"id": 1},
        401,
    ),
]


@pytest.mark.parametrize(("method", "route", "path", "headers", "body", "status"), CASES)
def test_a_refusal_is_what_openapi_declares(
    api_url: str,
    tenant: Tenant,
    method: str,
    route: str,
    path: str,
    headers: dict[str, str],
    body: Any,
    status: int,
) -> None:
    sent = {name: value.replace("{token}", tenant.token) for name, value in headers.items()}
    response = httpx.request(method, f"{api_url}{path}", headers=sent, json=body, timeout=10)
    assert response.status_code == status, response.text
    document = httpx.get(f"{api_url}/openapi.json", timeout=10).json()
    declared = document["paths"][route][method.lower()]["responses"]
    assert str(status) in declared, f"{status} is not declared for {method} {route}"
    media_type = response.headers["content-type"].partition(";")[0]
    assert media_type in declared[str(status)]["content"]
    schema = declared[str(status)]["content"][media_type]["schema"]
    jsonschema_rs.validate({**schema, "components": document["components"]}, response.json())
