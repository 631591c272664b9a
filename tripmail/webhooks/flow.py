"""Webhook deliveries' transactions: each claim and each record its own, the POST between them outside any."""

from collections.abc import Callable
from datetime import datetime

import httpx
from sqlalchemy.orm import Session, sessionmaker

from tripmail.webhooks.deliveries import claim, post, record


def fire_webhooks(
    sessions: sessionmaker[Session], delivery_ids: list[int], *, client: httpx.Client, clock: Callable[[], datetime]
) -> None:
    """Claim, post and record each delivery; the POST happens outside any transaction."""
    for delivery_id in delivery_ids:
        with sessions.begin() as session:
            claimed = claim(session, delivery_id, now=clock())
        if claimed is None:
            continue
        posted = post(client, claimed, now=clock())
        with sessions.begin() as session:
            record(session, claimed, posted, now=clock())
