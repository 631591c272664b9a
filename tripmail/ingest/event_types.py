"""Event types: finding a workspace's event type by its key or its uuid, and creating it on first use.

A leaf module: the api reads event types through it on every request, and must not load the recording and
delivery code that the rest of tripmail.ingest brings with it.
"""

import uuid
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from tripmail.db import insert_if_absent
from tripmail.ids import normalize_key
from tripmail.ingest.dedupe import DEFAULT_DEDUPE_WINDOW_S
from tripmail.models import EventType

# Built once, as the other statements every one-contact event runs (tripmail/ingest/recording.py says why).
_EVENT_TYPE_BY_KEY = select(EventType).where(
    EventType.workspace_id == bindparam("ws"), EventType.key_normalized == bindparam("key")
)


def find_event_type(session: Session, workspace_id: int, key: str) -> EventType | None:
    """The workspace's event type for this key, if it has one."""
    return session.scalars(_EVENT_TYPE_BY_KEY, {"ws": workspace_id, "key": normalize_key(key)}).one_or_none()


def find_event_type_by_uuid(session: Session, workspace_id: int, uuid: str) -> EventType | None:
    """The workspace's event type with this uuid (bunce names event types by it), if it has one."""
    return session.scalars(
        select(EventType).where(EventType.workspace_id == workspace_id, EventType.uuid == uuid.lower())
    ).one_or_none()


def get_or_create_event_type(session: Session, workspace_id: int, key: str, *, now: datetime) -> EventType:
    """The workspace's event type for this key, created on first use."""
    existing = find_event_type(session, workspace_id, key)
    if existing is not None:
        return existing
    values = {
        "workspace_id": workspace_id,
        "key": key,
        "key_normalized": normalize_key(key),
        "name": key,
        "uuid": str(uuid.uuid4()),
        "params": {},
        "dedupe_window_s": DEFAULT_DEDUPE_WINDOW_S,
        "created_at": now,
    }
    insert_if_absent(session, EventType, values, ["workspace_id", "key_normalized"])
    created = find_event_type(session, workspace_id, key)
    assert created is not None, "inserted or already there"
    return created
