"""Delivery events: a workspace's webhook endpoints are told when its messages are sent, fail, bounce, draw a
complaint, end unknown or are suppressed, as Standard Webhooks (https://www.standardwebhooks.com).

An outbox: `announce` writes a webhook delivery for each subscribed endpoint in the transaction that changes the
messages' status, so nothing is announced that did not happen (a rollback takes the deliveries with it) and nothing
that happened is lost (the commit keeps them until they are posted). The scheduler hands them to workers, which
post and retry them as they do automations' webhook steps (tripmail/webhooks/deliveries.py).

Recording results is delivery's hot path: for a workspace with no endpoint, `announce` is a lookup in what this
process read of every workspace's endpoints at most SUBSCRIPTIONS_FRESH_S ago. An endpoint therefore receives the
events of messages that change status from at most that long after it was added.
"""

import base64
import json
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import HttpUrl, TypeAdapter, ValidationError
from sqlalchemy import Connection, bindparam, func, insert, select
from sqlalchemy.orm import Session

from tripmail.errors import InvalidRequest, NotFound
from tripmail.ids import iso_utc, new_id
from tripmail.models import Message, WebhookDelivery, WebhookEndpoint, WebhookStatus, Workspace, table_of
from tripmail.schemas.webhook_endpoints import CreatedEndpoint, EndpointView

# `message.<status>` for each status a message ends in, or reaches after it was sent.
DeliveryEventType = Literal[
    "message.sent", "message.failed", "message.bounced", "message.complained", "message.unknown", "message.suppressed"
]
EVENT_TYPES: tuple[str, ...] = get_args(DeliveryEventType)
# Each endpoint multiplies the deliveries a message makes; a workspace needs one or two.
MAX_ENDPOINTS = 10
MAX_URL_LENGTH = 2000
SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks marker, not a secret
SUBSCRIPTIONS_FRESH_S = 2.0

Database = Session | Connection


def event_type_of(status: str) -> str:
    """The delivery event type of a message status: `sent` -> `message.sent`."""
    return f"message.{status}"


def new_secret() -> str:
    """A Standard Webhooks secret: `whsec_` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


_URL = TypeAdapter(HttpUrl)


def endpoint_url(url: str) -> str:
    """An http(s) URL with a host, as it will be POSTed to; InvalidRequest names what is wrong with it."""
    try:
        parsed = _URL.validate_python(url.strip())
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise InvalidRequest(f"{url!r} is not an http or https URL: {reason}", field="url") from exc
    if len(str(parsed)) > MAX_URL_LENGTH:
        raise InvalidRequest(f"the URL is longer than {MAX_URL_LENGTH} characters", field="url")
    return str(parsed)


def subscribed_types(event_types: Sequence[str] | None) -> list[str]:
    """The event types asked for, each known, in EVENT_TYPES' order; all of them when none are named."""
    if event_types is None:
        return list(EVENT_TYPES)
    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown or not event_types:
        raise InvalidRequest(
            f"unknown event type(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(EVENT_TYPES)}",
            field="event_types",
        )
    return [name for name in EVENT_TYPES if name in event_types]


def endpoint_view(row: WebhookEndpoint) -> EndpointView:
    return EndpointView(
        id=row.id, url=row.url, event_types=row.event_types, enabled=row.enabled, created_at=row.created_at
    )


def add_endpoint(
    session: Session,
    workspace_id: int,
    url: str,
    *,
    event_types: Sequence[str] | None = None,
    enabled: bool = True,
    now: datetime,
) -> CreatedEndpoint:
    """Register an endpoint with a new secret, which the answer carries and no later one does."""
    row = WebhookEndpoint(
        workspace_id=workspace_id,
        url=endpoint_url(url),
        event_types=subscribed_types(event_types),
        secret=new_secret(),
        enabled=enabled,
        created_at=now,
    )
    registered = session.scalar(
        select(func.count()).select_from(WebhookEndpoint).where(WebhookEndpoint.workspace_id == workspace_id)
    )
    if registered is not None and registered >= MAX_ENDPOINTS:
        raise InvalidRequest(
            f"the workspace has {MAX_ENDPOINTS} webhook endpoints, the most it may have; remove one first"
        )
    session.add(row)
    session.flush()
    return CreatedEndpoint(**endpoint_view(row).model_dump(), secret=row.secret)


def list_endpoints(session: Session, workspace_id: int) -> list[EndpointView]:
    """The workspace's endpoints, oldest first, without their secrets."""
    rows = session.scalars(
        select(WebhookEndpoint).where(WebhookEndpoint.workspace_id == workspace_id).order_by(WebhookEndpoint.id)
    )
    return [endpoint_view(row) for row in rows]


def remove_endpoint(session: Session, workspace_id: int, endpoint_id: int) -> None:
    """Remove one of the workspace's endpoints, and the deliveries it had still to receive; NotFound otherwise."""
    row = session.scalars(
        select(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id, WebhookEndpoint.workspace_id == workspace_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"the workspace has no webhook endpoint {endpoint_id}", field="endpoint_id")
    session.delete(row)
    session.flush()


_ENDPOINTS = table_of(WebhookEndpoint)
_MESSAGES = table_of(Message)
_WORKSPACES = table_of(Workspace)

_SUBSCRIPTIONS = select(_ENDPOINTS.c.workspace_id, _ENDPOINTS.c.event_types).where(_ENDPOINTS.c.enabled)

# FOR KEY SHARE on PostgreSQL: an endpoint removed at this moment waits for the deliveries written to it, and drops
# them with it, rather than fail the status change on their foreign key. SQLite's one writer needs no lock.
_ANNOUNCED_TO = (
    select(_ENDPOINTS.c.id, _ENDPOINTS.c.url, _ENDPOINTS.c.event_types)
    .where(_ENDPOINTS.c.workspace_id == bindparam("workspace"), _ENDPOINTS.c.enabled)
    .with_for_update(read=True, key_share=True)
)

# What the payload says of each message, read in the transaction that gave it its new status.
_ANNOUNCED = (
    select(
        _MESSAGES.c.id,
        _MESSAGES.c.event_id,
        _WORKSPACES.c.key,
        _MESSAGES.c.to_address,
        _MESSAGES.c.status,
        _MESSAGES.c.smtp_code,
        _MESSAGES.c.smtp_reply,
        _MESSAGES.c.relay,
        _MESSAGES.c.message_id_header,
        _MESSAGES.c.automation_id,
    )
    .join(_WORKSPACES, _WORKSPACES.c.id == _MESSAGES.c.workspace_id)
    .where(_MESSAGES.c.id.in_(bindparam("ids", expanding=True)), _MESSAGES.c.workspace_id == bindparam("workspace"))
    .order_by(_MESSAGES.c.id)
)

_ADD_DELIVERIES = insert(table_of(WebhookDelivery))


class Subscriptions:
    """The event types each workspace's enabled endpoints receive, read at most `fresh_s` ago, per database (a
    process may use several: the tests do)."""

    def __init__(self, fresh_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._fresh_s = fresh_s
        self._clock = clock
        self._read: dict[str, tuple[float, dict[int, frozenset[str]]]] = {}

    def wanted(self, db: Database, workspace_id: int, event_type: str) -> bool:
        """Whether an endpoint of the workspace may receive `event_type`; reads every workspace's when stale."""
        bind = db.get_bind() if isinstance(db, Session) else db
        database = str(bind.engine.url)
        read = self._read.get(database)
        if read is None or read[0] <= self._clock():
            by_workspace: dict[int, set[str]] = {}
            for workspace, types in db.execute(_SUBSCRIPTIONS):
                by_workspace.setdefault(workspace, set()).update(types)
            read = (self._clock() + self._fresh_s, {key: frozenset(types) for key, types in by_workspace.items()})
            self._read[database] = read
        return event_type in read[1].get(workspace_id, ())


SUBSCRIPTIONS = Subscriptions(SUBSCRIPTIONS_FRESH_S)


def announce(
    db: Database,
    workspace_id: int,
    message_ids: Sequence[int],
    event_type: str,
    *,
    now: datetime,
    subscriptions: Subscriptions | None = None,
) -> int:
    """Write a delivery of `event_type` about each of these messages of the workspace to each of its enabled
    endpoints that receives that type; how many.

    Call it in the transaction that gave the messages their new status, after that change: the payload is read
    from the messages as they are then, and commits or rolls back with it.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown delivery event type {event_type!r}")
    if not message_ids or not (subscriptions or SUBSCRIPTIONS).wanted(db, workspace_id, event_type):
        return 0
    endpoints = [
        (endpoint_id, url)
        for endpoint_id, url, types in db.execute(_ANNOUNCED_TO, {"workspace": workspace_id})
        if event_type in types
    ]
    if not endpoints:
        return 0
    messages = db.execute(_ANNOUNCED, {"ids": list(message_ids), "workspace": workspace_id}).all()
    deliveries = [
        {
            "workspace_id": workspace_id,
            "endpoint_id": endpoint_id,
            "webhook_id": f"msg_{new_id()}",
            "url": url,
            "body": _body(event_type, message, now=now),
            "status": WebhookStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
            "updated_at": now,
        }
        for message in messages
        for endpoint_id, url in endpoints
    ]
    if deliveries:
        db.execute(_ADD_DELIVERIES, deliveries)
    return len(deliveries)


def announce_by_workspace(db: Database, messages: Iterable[tuple[int, int]], event_type: str, *, now: datetime) -> None:
    """`announce` for (message id, workspace id) pairs of any workspaces."""
    by_workspace: dict[int, list[int]] = {}
    for message_id, workspace_id in messages:
        by_workspace.setdefault(workspace_id, []).append(message_id)
    for workspace_id, message_ids in by_workspace.items():
        announce(db, workspace_id, message_ids, event_type, now=now)


def _body(event_type: str, message: Any, *, now: datetime) -> str:
    """The Standard Webhooks payload: what happened to the message, never its content."""
    message_id, event_id, workspace, to, status, code, reply, relay, header, automation_id = message
    data = {
        "message_id": message_id,
        "event_id": event_id,
        "workspace": workspace,
        "to": to,
        "status": status,
        "smtp_code": code,
        "smtp_reply": reply,
        "relay": relay,
        "message_id_header": header,
        "automation_id": automation_id,
    }
    return json.dumps({"type": event_type, "timestamp": iso_utc(now, milliseconds=True), "data": data})
