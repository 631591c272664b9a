"""A workspace's webhook endpoints through a running api, and the deliveries the workers made to them."""

import time
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import Tenant, make_token
from tripmail.models import WebhookDelivery
from tripmail.webhooks.delivery_events import SUBSCRIPTIONS_FRESH_S


def webhook_headers(db: sessionmaker[Session], tenant: Tenant) -> dict[str, str]:
    with db.begin() as session:
        return {"Authorization": f"Bearer {make_token(session, tenant.key, ['webhooks:read', 'webhooks:write'])}"}


def register(api_url: str, headers: dict[str, str], url: str, event_types: list[str] | None = None) -> dict[str, Any]:
    """POST /v1/webhook-endpoints, then wait until every worker reads endpoints again, as the README says it may
    take."""
    body: dict[str, Any] = {"url": url} | ({"event_types": event_types} if event_types is not None else {})
    response = httpx.post(f"{api_url}/v1/webhook-endpoints", json=body, headers=headers, timeout=10)
    assert response.status_code == 201, response.text
    time.sleep(SUBSCRIPTIONS_FRESH_S + 0.5)
    created: dict[str, Any] = response.json()
    return created


def rows_of(db: sessionmaker[Session], endpoint_id: int) -> list[WebhookDelivery]:
    with db() as session:
        return list(
            session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id).order_by(WebhookDelivery.id)
            )
        )
