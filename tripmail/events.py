"""Event types and the recording of accepted events."""

import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session, sessionmaker

from tripmail import delivery
from tripmail.audience import CHUNK, compile_query, contacts_page, custom_field_query, field_types, recipients_page
from tripmail.automations import automations_for
from tripmail.contacts import find_contact, update_contact, upsert_contact
from tripmail.db import insert_if_absent
from tripmail.delivery import Recipient
from tripmail.fields import apply_field_options
from tripmail.ids import normalize_key
from tripmail.models import Contact, Event, EventStatus, EventType
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


def _event_type(session: Session, trigger: TriggerRequest, *, now: datetime) -> EventType | None:
    if trigger.event is None:
        return None
    if trigger.create_event_type:
        return get_or_create_event_type(session, trigger.workspace_id, trigger.event, now=now)
    return find_event_type(session, trigger.workspace_id, trigger.event)


def _single_contact(session: Session, trigger: TriggerRequest, *, now: datetime) -> Contact | None:
    """The one contact the trigger names, created when the trigger may create it, with its update merged on."""
    audience = trigger.audience
    if not audience.names_someone:
        # An event may name no contact Tripmail can mail (esputnik accepts a push token alone).
        return None
    if trigger.create_contact:
        return upsert_contact(session, trigger.workspace_id, audience, trigger.contact_update, now=now)
    contact = find_contact(session, trigger.workspace_id, audience)
    if contact is not None:
        update_contact(contact, audience, trigger.contact_update, now=now)
    return contact


def _earlier_event(session: Session, event_type: EventType | None, key: str | None, *, now: datetime) -> str | None:
    """The id of an event with the same type and key inside the type's dedupe window, if one was recorded.

    The api's Redis claim answers duplicates; this catches one that slipped past it (Redis lost the claim).
    """
    if key is None or event_type is None or event_type.dedupe_window_s <= 0:
        return None
    return session.scalars(
        select(Event.id)
        .where(
            Event.workspace_id == event_type.workspace_id,
            Event.event_type_id == event_type.id,
            Event.key == key,
            Event.status.in_([EventStatus.PROCESSED, EventStatus.FANNING_OUT]),
            Event.received_at >= now - timedelta(seconds=event_type.dedupe_window_s),
        )
        .order_by(Event.received_at)
        .limit(1)
    ).first()


def record_event(session: Session, event_id: str, trigger: TriggerRequest, *, now: datetime) -> list[int]:
    """Store the event once; plan the messages of a one-contact audience; return the ids still to send.

    An audience of many is left `fanning_out` for fan_out_chunk. Running this again for the same event id (a
    redelivered task) plans nothing new.
    """
    if session.get(Event, event_id) is not None:
        return delivery.pending_message_ids(session, event_id)
    event_type = _event_type(session, trigger, now=now)
    first = _earlier_event(session, event_type, trigger.key, now=now)
    automations = [] if first is not None else automations_for(session, trigger)
    many = trigger.audience.selects_many and first is None
    event = Event(
        id=event_id,
        workspace_id=trigger.workspace_id,
        event_type_id=event_type.id if event_type else None,
        name=trigger.event_name,
        key=trigger.key,
        status=EventStatus.FANNING_OUT if many else EventStatus.PROCESSED if first is None else EventStatus.DUPLICATE,
        error=None if first is None else f"duplicate of event {first}",
        matched_automations=len(automations),
        request=trigger.model_dump(mode="json"),
        received_at=now,
        processed_at=None if many else now,
    )
    session.add(event)
    session.flush()
    if first is not None or many:
        return []
    contact = _single_contact(session, trigger, now=now)
    if contact is None:
        return []
    event.contact_id = contact.id
    apply_field_options(contact, trigger.fields, now=now)
    return delivery.plan_messages(session, event, [contact], automations, trigger.channel_filter, now=now)


def fan_out_chunk(session: Session, event_id: str, *, now: datetime) -> tuple[list[int], bool]:
    """Plan the next chunk of a fanning-out event's audience; the new message ids, and whether it is done."""
    event = session.get(Event, event_id)
    if event is None or event.status != EventStatus.FANNING_OUT:
        return [], True
    trigger = TriggerRequest.model_validate(event.request)
    condition = audience_condition(session, trigger)
    after = event.fanout_cursor or ""
    contacts: Sequence[Recipient]
    if _changes_contacts(trigger):
        contacts = contacts_page(session, trigger.workspace_id, condition, after=after, limit=CHUNK)
        for contact in contacts:
            update_contact(contact, trigger.audience, trigger.contact_update, now=now)
            apply_field_options(contact, trigger.fields, now=now)
    else:
        contacts = recipients_page(session, trigger.workspace_id, condition, after=after, limit=CHUNK)
    automations = automations_for(session, trigger)
    planned = delivery.plan_messages(session, event, contacts, automations, trigger.channel_filter, now=now)
    if contacts:
        event.contact_id = event.contact_id or contacts[0].id
        event.fanout_cursor = contacts[-1].id
    if len(contacts) < CHUNK:
        event.status = EventStatus.PROCESSED
        event.processed_at = now
    return planned, event.status == EventStatus.PROCESSED


def _changes_contacts(trigger: TriggerRequest) -> bool:
    update = trigger.contact_update
    return bool(update.fields) or update.email_consent is not None or any(f.option != 1 for f in trigger.fields)


def audience_condition(session: Session, trigger: TriggerRequest) -> ColumnElement[bool]:
    audience = trigger.audience
    if audience.query is not None:
        return compile_query(session, trigger.workspace_id, audience.query)
    assert audience.custom_field is not None, "only audiences of many fan out"
    types = field_types(session, trigger.workspace_id)
    query = custom_field_query(types, audience.custom_field.name, audience.custom_field.value)
    return compile_query(session, trigger.workspace_id, query)


def process_event(
    sessions: sessionmaker[Session],
    event_id: str,
    trigger: TriggerRequest,
    *,
    enqueue: Callable[[list[int]], None],
    clock: Callable[[], datetime],
) -> None:
    """Record the event, then fan its audience out a chunk per transaction.

    Each chunk's messages are enqueued only after the transaction that planned them committed, and the cursor
    commits with them, so a worker that dies mid-way leaves a redelivered task to resume where it stopped.
    """
    with sessions.begin() as session:
        message_ids = record_event(session, event_id, trigger, now=clock())
    enqueue(message_ids)
    done = False
    while not done:
        with sessions.begin() as session:
            message_ids, done = fan_out_chunk(session, event_id, now=clock())
        enqueue(message_ids)


def process_events(
    sessions: sessionmaker[Session],
    events: Sequence[tuple[str, TriggerRequest]],
    *,
    enqueue: Callable[[list[int]], None],
    batch_size: int,
    clock: Callable[[], datetime],
) -> None:
    """Process several accepted events, each in transactions of its own, sending their messages together.

    Messages of different events share delivery batches of `batch_size`, so a burst of one-contact events costs
    one delivery task per batch rather than one per event. Ids held back for a fuller batch were committed
    already: if the worker dies first, the redelivered task finds them pending and enqueues them then.
    """
    held: list[int] = []

    def hold(message_ids: list[int]) -> None:
        held.extend(message_ids)
        while len(held) >= batch_size:
            enqueue(held[:batch_size])
            del held[:batch_size]

    for event_id, trigger in events:
        process_event(sessions, event_id, trigger, enqueue=hold, clock=clock)
    if held:
        enqueue(held)


def record_failed_event(session: Session, event_id: str, trigger: TriggerRequest, error: str, *, now: datetime) -> None:
    """Keep an accepted event whose processing gave up for good, with the reason, so it is visible, not lost."""
    if session.get(Event, event_id) is not None:
        return
    event_type = find_event_type(session, trigger.workspace_id, trigger.event) if trigger.event else None
    session.add(
        Event(
            id=event_id,
            workspace_id=trigger.workspace_id,
            event_type_id=event_type.id if event_type else None,
            name=trigger.event_name,
            key=trigger.key,
            status=EventStatus.FAILED,
            matched_automations=0,
            error=error[:2000],
            request=trigger.model_dump(mode="json"),
            received_at=now,
        )
    )
    session.flush()
