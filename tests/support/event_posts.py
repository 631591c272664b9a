"""Events posted to a running api's native endpoint, as a client sends them."""

import httpx

from tests.support.builders import Tenant


def post(
    api_url: str, tenant: Tenant, email: str, key: str | None = None, event: str = "FORGOT_PASSWORD"
) -> httpx.Response:
    body = {"event": event, "key": key, "contact": {"email": email}, "data": {"forgot_password_link": "x"}}
    return httpx.post(
        f"{api_url}/v1/events", json=body, headers={"Authorization": f"Bearer {tenant.token}"}, timeout=30
    )


def post_reset(api_url: str, token: str, email: str) -> str:
    body = {"event": "FORGOT_PASSWORD", "contact": {"email": email}, "data": {"forgot_password_link": "https://x"}}
    response = httpx.post(f"{api_url}/v1/events", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])
