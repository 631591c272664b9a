"""Event types and the recording of accepted events."""

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tripmail import delivery
from tripmail.automations import matching_automations
from tripmail.contacts import upsert_contact
from tripmail.db import add_or_refetch
from tripmail.ids import normalize_key
from tripmail.models import Event, EventStatus, EventType
from tripmail.schemas.trigger import TriggerRequest

DEFAULT_DEDUPE_WINDOW_S = 24 * 3600


def find_event_type(session: Session, workspace_id: int, key: str) -> EventType | None:
    return session.scalars(
        select(EventType).where(EventType.workspace_id == workspace_id, EventType.key_normalized == normalize_key(key))
    ).one_or_none()


def find_event_type_by_uuid(session: Session, workspace_id: int, uuid: str) -> EventType | None:
    return session.scalars(
        select(EventType).where(EventType.workspace_id == workspace_id, EventType.uuid == uuid.lower())
    ).one_or_none()


def get_or_create_event_type(session: Session, workspace_id: int, key: str, *, now: datetime) -> EventType:
    """The workspace's event type for this key, created on first use."""
    existing = find_event_type(session, workspace_id, key)
    if existing is not None:
        return existing
    event_type = EventType(
        workspace_id=workspace_id,
        key=key,
        key_normalized=normalize_key(key),
        name=key,
        uuid=str(uuid.uuid4()),
        params={},
        dedupe_window_s=DEFAULT_DEDUPE_WINDOW_S,
        created_at=now,
    )
    return add_or_refetch(session, event_type, lambda: find_event_type(session, workspace_id, key))


def record_event(session: Session, event_id: str, trigger: TriggerRequest, *, now: datetime) -> list[int]:
    """Store the event once and plan its messages; return the ids of messages still to send.

    Running it again for the same event id (a redelivered task) plans nothing new.
    """
    if session.get(Event, event_id) is not None:
        return delivery.pending_message_ids(session, event_id)
    if trigger.create_event_type:
        event_type: EventType | None = get_or_create_event_type(session, trigger.workspace_id, trigger.event, now=now)
    else:
        event_type = find_event_type(session, trigger.workspace_id, trigger.event)
    # An event may name no contact Tripmail can mail (esputnik accepts a push token alone): it is recorded all the same.
    contact = (
        upsert_contact(session, trigger.workspace_id, trigger.audience, trigger.contact_update, now=now)
        if trigger.audience.names_someone
        else None
    )
    automations = matching_automations(session, trigger.workspace_id, trigger.event)
    event = Event(
        id=event_id,
        workspace_id=trigger.workspace_id,
        event_type_id=event_type.id if event_type else None,
        name=trigger.event,
        key=trigger.key,
        contact_id=contact.id if contact else None,
        status=EventStatus.PROCESSED,
        matched_automations=len(automations),
        request=trigger.model_dump(mode="json"),
        received_at=now,
        processed_at=now,
    )
    session.add(event)
    session.flush()
    return delivery.plan_messages(session, event, contact, automations, now=now) if contact else []


def record_failed_event(session: Session, event_id: str, trigger: TriggerRequest, error: str, *, now: datetime) -> None:
    """Keep an accepted event whose processing gave up for good, with the reason, so it is visible, not lost."""
    if session.get(Event, event_id) is not None:
        return
    event_type = find_event_type(session, trigger.workspace_id, trigger.event)
    session.add(
        Event(
            id=event_id,
            workspace_id=trigger.workspace_id,
            event_type_id=event_type.id if event_type else None,
            name=trigger.event,
            key=trigger.key,
            status=EventStatus.FAILED,
            matched_automations=0,
            error=error[:2000],
            request=trigger.model_dump(mode="json"),
            received_at=now,
        )
    )
    session.flush()
