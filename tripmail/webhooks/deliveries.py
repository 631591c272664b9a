"""Webhooks: automations' webhook steps and delivery events (tripmail/webhooks/delivery_events.py), each delivery
POSTed,
signed, retried with backoff on 5xx, 408, 429, timeouts and connection errors. Only public addresses, and networks
the operator allows, are posted to (tripmail/webhooks/egress.py); of the answer only its status is kept.

The scheduler hands due deliveries to a worker (as it hands waiting runs), which claims each before posting it,
so two workers do not post it at once. A worker that dies mid-POST leaves it claimed; it is handed out again once
that claim is stale, so a receiver may see a delivery twice and should keep its id (`X-Tripmail-Delivery` of a
step, `webhook-id` of a delivery event).

A step's signature: `X-Tripmail-Signature: v1=<hex HMAC-SHA256(secret, "<X-Tripmail-Timestamp>.<body>")>`, when the
step has a secret; the receiver recomputes it and refuses an old timestamp. A delivery event is signed as Standard
Webhooks are: `webhook-signature: v1,<base64 HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>")>`, with
the endpoint's `whsec_` secret as the key.
"""

import hashlib
import hmac
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import ColumnElement, bindparam, or_, select, update
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from tripmail.models import Automation, AutomationStep, WebhookDelivery, WebhookEndpoint, WebhookStatus, table_of
from tripmail.queue import HAND_OUT_AGAIN_AFTER, ByLane
from tripmail.webhooks.egress import NonPublicAddress

# Posts of one delivery before it is failed; 2, 4, 8 ... s apart (capped at 5 minutes), with a second of jitter.
MAX_ATTEMPTS = 8
POST_TIMEOUT_S = 10.0
DRAINED_BYTES = 64 * 1024

_DELIVERIES = table_of(WebhookDelivery)


def _takeable(*, handed_out_lately_too: bool) -> ColumnElement[bool]:
    """Due, or claimed by a worker long enough ago that it must have died; to hand out, not handed out lately."""
    deliveries = _DELIVERIES.c
    due = (deliveries.status == WebhookStatus.PENDING) & (deliveries.next_attempt_at <= bindparam("now"))
    stranded = (deliveries.status == WebhookStatus.POSTING) & (deliveries.enqueued_at < bindparam("stale"))
    if not handed_out_lately_too:
        due &= deliveries.enqueued_at.is_(None) | (deliveries.enqueued_at < bindparam("stale"))
    return or_(due, stranded)


_AUTOMATIONS = table_of(Automation)
# With its automation's flag: a transactional automation's webhooks go to the fast lane.
# A delivery event to an endpoint has no automation: it waits in the bulk lane.
_DUE = (
    select(_DELIVERIES.c.id, _AUTOMATIONS.c.transactional)
    .join(_AUTOMATIONS, _AUTOMATIONS.c.id == _DELIVERIES.c.automation_id, isouter=True)
    .where(_takeable(handed_out_lately_too=False))
    .order_by(_DELIVERIES.c.next_attempt_at)
    .limit(bindparam("limit"))
)
# Only those still takeable: a worker may have claimed, posted and recorded one before this runs (the scheduler's
# transaction waits for the write lock), and marking it then would hold its next attempt back by
# HAND_OUT_AGAIN_AFTER.
_HANDED_OUT = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id.in_(bindparam("ids", expanding=True)), _takeable(handed_out_lately_too=True))
    .values(enqueued_at=bindparam("now"))
)
_CLAIM = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id == bindparam("delivery"), _takeable(handed_out_lately_too=True))
    .values(status=WebhookStatus.POSTING, enqueued_at=bindparam("now"), updated_at=bindparam("now"))
    .returning(_DELIVERIES.c.id)
)


def due_webhooks(session: Session, *, now: datetime, limit: int) -> ByLane:
    return ByLane.split(session.execute(_DUE, {"now": now, "stale": now - HAND_OUT_AGAIN_AFTER, "limit": limit}))


def mark_handed_out(session: Session, delivery_ids: list[int], *, now: datetime) -> None:
    if delivery_ids:
        session.execute(_HANDED_OUT, {"ids": delivery_ids, "now": now, "stale": now - HAND_OUT_AGAIN_AFTER})


@dataclass(frozen=True)
class Claimed:
    id: int
    url: str
    body: str
    secret: str | None
    attempts: int
    # Set for a delivery event, which is signed as Standard Webhooks are.
    webhook_id: str | None = None


def claim(session: Session, delivery_id: int, *, now: datetime) -> Claimed | None:
    """Take a due delivery for this worker to post; None when it is not due or another worker has it."""
    if session.scalars(_CLAIM, {"delivery": delivery_id, "now": now, "stale": now - HAND_OUT_AGAIN_AFTER}).first():
        delivery = session.get_one(WebhookDelivery, delivery_id)
        secret: str | None
        if delivery.endpoint_id is not None:
            secret = session.get_one(WebhookEndpoint, delivery.endpoint_id).secret
        else:
            secret = session.get_one(AutomationStep, delivery.step_id).config.get("secret")
        return Claimed(delivery.id, delivery.url, delivery.body, secret, delivery.attempts, delivery.webhook_id)
    return None


def signature(secret: str, timestamp: int, body: str) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"v1={digest}"


def standard_headers(secret: str, webhook_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt: its id stays, its timestamp and signature are the attempt's."""
    signed = Webhook(secret).sign(webhook_id, datetime.fromtimestamp(timestamp, UTC), body)
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp), "webhook-signature": signed}


@dataclass(frozen=True)
class Posted:
    code: int | None
    error: str | None
    # Set when posting again cannot help: the URL's host is not one webhooks may reach.
    final: bool = False

    @property
    def retryable(self) -> bool:
        return not self.final and (self.code is None or self.code >= 500 or self.code in (408, 429))


def post(client: httpx.Client, delivery: Claimed, *, now: datetime) -> Posted:
    """POST the delivery once; what is kept of the answer is its status, never its body or headers, which the event
    history would otherwise show the workspace (of a server it may not reach itself)."""
    timestamp = int(now.timestamp())
    headers = {"Content-Type": "application/json", "User-Agent": "Tripmail-Webhook/1"}
    if delivery.webhook_id is not None and delivery.secret:
        headers |= standard_headers(delivery.secret, delivery.webhook_id, timestamp, delivery.body)
    else:
        headers |= {"X-Tripmail-Delivery": str(delivery.id), "X-Tripmail-Timestamp": str(timestamp)}
        if delivery.secret:
            headers["X-Tripmail-Signature"] = signature(delivery.secret, timestamp, delivery.body)
    try:
        with client.stream(
            "POST", delivery.url, content=delivery.body.encode(), headers=headers, timeout=POST_TIMEOUT_S
        ) as response:
            _drain(response)
    except NonPublicAddress as exc:
        return Posted(None, str(exc), final=True)
    except httpx.HTTPError as exc:
        return Posted(None, _failure(exc))
    if response.is_success:
        return Posted(response.status_code, None)
    # The standard phrase, not the one the receiver sent.
    return Posted(response.status_code, f"{response.status_code} {httpx.codes.get_reason_phrase(response.status_code)}")


def _drain(response: httpx.Response) -> None:
    """Read and drop a short answer, so its connection carries the next post; a longer one is cut off (its
    connection closed) rather than held in memory."""
    read = 0
    for chunk in response.iter_raw():
        read += len(chunk)
        if read > DRAINED_BYTES:
            return


def _failure(exc: httpx.HTTPError) -> str:
    """The attempt's error: a connection or timeout error's own words, which are the operating system's; of any
    other only its kind, as a protocol error quotes what the receiver sent (h11 shows a bad status line)."""
    if isinstance(exc, httpx.NetworkError | httpx.TimeoutException):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__} (its details are not kept: they may quote the receiver's answer)"


def record(session: Session, delivery: Claimed, posted: Posted, *, now: datetime) -> None:
    """The attempt's outcome: sent, pending again after a backoff, or failed (a 4xx, or the attempts ran out)."""
    row = session.get_one(WebhookDelivery, delivery.id)
    row.attempts = delivery.attempts + 1
    row.last_code, row.last_error = posted.code, posted.error
    row.enqueued_at = None
    row.updated_at = now
    if posted.error is None:
        row.status = WebhookStatus.SENT
    elif posted.retryable and row.attempts < MAX_ATTEMPTS:
        row.status = WebhookStatus.PENDING
        backoff = min(300, 2**row.attempts) + random.uniform(0, 1)  # noqa: S311 - jitter, not security
        row.next_attempt_at = now + timedelta(seconds=backoff)
    else:
        row.status = WebhookStatus.FAILED
