"""The recording of accepted events: each event's row once, its contact, its runs and the messages it plans,
with the events of one transaction sharing their lookups; and the keyed dedupe that catches a repeat the api's
Redis claim missed.

An audience of many is recorded `fanning_out` here and planned a page at a time by tripmail/ingest/fan_out.py.
"""

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import bindparam, insert, select
from sqlalchemy.orm import Session

from tripmail.automations import runs
from tripmail.automations.program import Started, automations_for, transactional_steps
from tripmail.contacts.audience import field_types
from tripmail.contacts.fields import apply_field_options
from tripmail.contacts.store import find_contact, new_contact_values, update_contact, upsert_contact
from tripmail.db import insert_new
from tripmail.delivery.planning import add_messages, message_rows, pending_message_ids
from tripmail.delivery.suppressions import suppressed_addresses
from tripmail.ids import normalize_key
from tripmail.ingest.dedupe import content_digest
from tripmail.ingest.event_types import find_event_type, get_or_create_event_type
from tripmail.ingest.fan_out import carry_out_runs
from tripmail.models import AutomationRun, Contact, Event, EventStatus, EventType, table_of
from tripmail.queue import ByLane
from tripmail.schemas.trigger import TriggerRequest

log = logging.getLogger(__name__)

# The statements every one-contact event runs are built once: building an ORM statement costs more than running
# it on SQLite. Those that need no entity name table columns: a statement of ORM attributes takes the ORM's
# execution path, which costs more than the same Core statement (bench/results.md, What the code's shape rests on).
_EVENTS = table_of(Event)
_RECORDED = select(_EVENTS.c.id).where(_EVENTS.c.id.in_(bindparam("ids", expanding=True)))
_CONTACTS_BY_EMAIL = select(Contact).where(
    Contact.workspace_id == bindparam("ws"), Contact.email.in_(bindparam("emails", expanding=True))
)
_FIRST_STATUSES = (EventStatus.PROCESSED, EventStatus.FANNING_OUT)
# Recorded events of a type with one of these keys. The dedupe window is applied to the few rows this returns, in
# Python: with `received_at >= ?` (or ORDER BY received_at) in the query, SQLite chooses the (workspace,
# received_at) index and reads every event of the window instead of the rows of these keys, a cost per event that
# grows with the table (bench/results.md, What the code's shape rests on).
_WITH_KEYS = select(_EVENTS.c.key, _EVENTS.c.id, _EVENTS.c.received_at, _EVENTS.c.request).where(
    _EVENTS.c.workspace_id == bindparam("ws"),
    _EVENTS.c.event_type_id == bindparam("type"),
    _EVENTS.c.status.in_(_FIRST_STATUSES),
    _EVENTS.c.key.in_(bindparam("keys", expanding=True)),
)
_ADD_EVENT = insert(_EVENTS)
_ADD_RUN = insert(table_of(AutomationRun))


def _event_type(session: Session, trigger: TriggerRequest, *, now: datetime) -> EventType | None:
    if trigger.event is None:
        return None
    if trigger.create_event_type:
        return get_or_create_event_type(session, trigger.workspace_id, trigger.event, now=now)
    return find_event_type(session, trigger.workspace_id, trigger.event)


def _single_contact(session: Session, trigger: TriggerRequest, *, now: datetime, lookups: "Lookups") -> Contact | None:
    """The one contact the trigger names, created when the trigger may create it, with its update merged on."""
    audience = trigger.audience
    if not audience.names_someone:
        # An event may name no contact Tripmail can mail (esputnik accepts a push token alone).
        return None
    loaded = lookups.contact(trigger)
    if loaded is not None:
        update_contact(loaded, audience, trigger.contact_update, now=now)
        return loaded
    if trigger.create_contact:
        return upsert_contact(session, trigger.workspace_id, audience, trigger.contact_update, now=now)
    contact = find_contact(session, trigger.workspace_id, audience)
    if contact is not None:
        update_contact(contact, audience, trigger.contact_update, now=now)
    return contact


def _earlier_events(
    session: Session, event_type: EventType, keys: Collection[str], *, now: datetime
) -> dict[tuple[str, str], str]:
    """(key, content digest) -> id of the first event with the type, that key and that content inside the type's
    dedupe window, if one was recorded.

    The api's Redis claim answers duplicates; this catches one that slipped past it (Redis lost the claim). An
    event with the key and other content is not a duplicate: the native API refused it if it could, and esputnik's
    keyValue names the contact, so it is another event for them.
    """
    if not keys or event_type.dedupe_window_s <= 0:
        return {}
    since = now - timedelta(seconds=event_type.dedupe_window_s)
    parameters = {"ws": event_type.workspace_id, "type": event_type.id, "keys": list(keys)}
    earlier: dict[tuple[str, str], str] = {}
    for key, event_id, received_at, request in sorted(session.execute(_WITH_KEYS, parameters), key=lambda row: row[2]):
        if received_at >= since:
            earlier.setdefault((str(key), content_digest(request)), event_id)
    return earlier


@dataclass
class Lookups:
    """What the events recorded in one transaction share, each looked up once for all of them.

    `recorded` holds the ids among them that were recorded before (a redelivered batch).
    """

    recorded: set[str]
    keys: set[str] = field(default_factory=set)
    _event_types: dict[tuple[int, str], EventType | None] = field(default_factory=dict)
    _automations: dict[tuple[int, str, int | None], list[Started]] = field(default_factory=dict)
    _contacts: dict[tuple[int, str], Contact] = field(default_factory=dict)
    _suppressed: set[tuple[int, str]] = field(default_factory=set)
    _earlier: dict[tuple[int, str, str], str] = field(default_factory=dict)
    _earlier_loaded: set[int] = field(default_factory=set)
    _field_types: dict[int, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session, events: Sequence[tuple[str, TriggerRequest]], *, now: datetime) -> "Lookups":
        ids = [event_id for event_id, _ in events]
        lookups = cls(recorded=set(session.scalars(_RECORDED, {"ids": ids})))
        fresh = [trigger for event_id, trigger in events if event_id not in lookups.recorded]
        lookups.keys = {trigger.key for trigger in fresh if trigger.key}
        lookups._load_contacts(session, fresh, now=now)
        return lookups

    def _load_contacts(self, session: Session, triggers: list[TriggerRequest], *, now: datetime) -> None:
        """The contacts the triggers name by email, those missing created in one statement, and their suppressions."""
        first_by_email: dict[tuple[int, str], TriggerRequest] = {}
        for trigger in triggers:
            if trigger.audience.contact_id is None and trigger.audience.email is not None:
                first_by_email.setdefault((trigger.workspace_id, trigger.audience.email), trigger)
        # The first trigger naming an address creates it, with its consent, as if they ran one after the other.
        # Created with that trigger's fields, so merging them on afterwards changes nothing and writes nothing.
        rows = [
            new_contact_values(
                workspace_id,
                trigger.audience,
                email_consent=trigger.contact_update.email_consent_if_created is not False,
                now=now,
            )
            | {"fields": trigger.contact_update.fields}
            for (workspace_id, _email), trigger in first_by_email.items()
            if trigger.create_contact
        ]
        insert_new(session, Contact, rows, ["workspace_id", "email"], "id")
        for workspace_id in {workspace_id for workspace_id, _ in first_by_email}:
            emails = [email for ws, email in first_by_email if ws == workspace_id]
            for contact in session.scalars(_CONTACTS_BY_EMAIL, {"ws": workspace_id, "emails": emails}):
                self._contacts[(workspace_id, contact.email or "")] = contact
            suppressed = suppressed_addresses(session, workspace_id, set(emails))
            self._suppressed |= {(workspace_id, email) for email in suppressed}

    def contact(self, trigger: TriggerRequest) -> Contact | None:
        """The contact loaded for the trigger's email, if the trigger names its contact by email."""
        if trigger.audience.contact_id is not None or trigger.audience.email is None:
            return None
        return self._contacts.get((trigger.workspace_id, trigger.audience.email))

    def suppressed(self, workspace_id: int) -> set[str]:
        return {email for ws, email in self._suppressed if ws == workspace_id}

    def event_type(self, session: Session, trigger: TriggerRequest, *, now: datetime) -> EventType | None:
        key = (trigger.workspace_id, normalize_key(trigger.event or ""))
        if key not in self._event_types:
            self._event_types[key] = _event_type(session, trigger, now=now)
        return self._event_types[key]

    def automations_for(self, session: Session, trigger: TriggerRequest) -> list[Started]:
        key = (trigger.workspace_id, normalize_key(trigger.event or ""), trigger.automation_id)
        if key not in self._automations:
            self._automations[key] = automations_for(session, trigger)
        return self._automations[key]

    def transactional_steps(self) -> set[int]:
        """Of the steps of every automation looked up, those whose mail is transactional."""
        return transactional_steps(automation for started in self._automations.values() for automation in started)

    def earlier_event(
        self, session: Session, event_type: EventType | None, key: str | None, content: str, *, now: datetime
    ) -> str | None:
        """As _earlier_events, with one query per event type for every key of the transaction."""
        if key is None or event_type is None:
            return None
        if event_type.id not in self._earlier_loaded:
            self._earlier_loaded.add(event_type.id)
            earlier = _earlier_events(session, event_type, self.keys, now=now)
            for (earlier_key, earlier_content), event_id in earlier.items():
                self._earlier.setdefault((event_type.id, earlier_key, earlier_content), event_id)
        return self._earlier.get((event_type.id, key, content))

    def field_types(self, session: Session, workspace_id: int) -> dict[str, str]:
        if workspace_id not in self._field_types:
            self._field_types[workspace_id] = field_types(session, workspace_id)
        return self._field_types[workspace_id]

    def note(self, event: dict[str, Any], content: str) -> None:
        """An event recorded in this transaction: a later one of it with the same key and content is its
        duplicate."""
        if event["key"] and event["event_type_id"] and event["status"] in _FIRST_STATUSES:
            self._earlier.setdefault((event["event_type_id"], event["key"], content), event["id"])


def record_event(session: Session, event_id: str, trigger: TriggerRequest, *, now: datetime) -> ByLane:
    """Store the event once; plan the messages of a one-contact audience; return the ids still to send, by lane.

    An audience of many is left `fanning_out` for fan_out_chunk. Running this again for the same event id (a
    redelivered task) plans nothing new.
    """
    return record_events(session, [(event_id, trigger)], now=now)


def record_events(session: Session, events: Sequence[tuple[str, TriggerRequest]], *, now: datetime) -> ByLane:
    """record_event for several events in one transaction, as if one after the other, sharing their lookups: the
    events in one statement, then their messages in one more (two statements per event cost more than deciding
    what to write)."""
    lookups = Lookups.load(session, events, now=now)
    pending = ByLane()
    event_rows: list[dict[str, Any]] = []
    run_rows: list[dict[str, Any]] = []
    webhooks: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for event_id, trigger in events:
        if event_id in lookups.recorded:
            pending.extend(pending_message_ids(session, event_id))
            continue
        planned = _event_and_messages(session, event_id, trigger, now=now, lookups=lookups)
        _log_event(planned)
        event_rows.append(planned.event)
        run_rows += planned.runs
        webhooks += planned.webhooks
        messages += planned.messages
    # Core, not the ORM: nothing reads the events back in this transaction, and the unit of work costs more than
    # the rest of recording a one-contact event.
    if event_rows:
        session.execute(_ADD_EVENT, event_rows)
    if run_rows:
        session.execute(_ADD_RUN, run_rows)
    runs.add_webhooks(session, webhooks)
    pending.extend(add_messages(session, messages, transactional_steps=lookups.transactional_steps()))
    return pending


def _log_event(planned: "_Planned") -> None:
    # Logged as it is decided; a transaction rolled back after it (the chunk refused) logs it again alone.
    event = planned.event
    log.info(
        "event %s %s (%s): %d message(s), %d run(s)",
        event["id"],
        event["status"],
        event["name"],
        len(planned.messages),
        len(planned.runs),
        extra={
            "workspace_id": event["workspace_id"],
            "event_id": event["id"],
            "event": event["name"],
            "outcome": event["status"],
            "messages": len(planned.messages),
        },
    )


class _Planned(NamedTuple):
    """The rows recording one event writes."""

    event: dict[str, Any]
    runs: list[dict[str, Any]]
    webhooks: list[dict[str, Any]]
    messages: list[dict[str, Any]]


def _event_and_messages(
    session: Session, event_id: str, trigger: TriggerRequest, *, now: datetime, lookups: Lookups
) -> _Planned:
    """The event's row, its runs' rows, their webhook deliveries and the rows of the messages it plans, with its
    contact created or updated (by its own fields, then by its runs' update_contact steps)."""
    event_type = lookups.event_type(session, trigger, now=now)
    request = trigger.model_dump(mode="json")
    content = content_digest(request) if trigger.key else ""
    first = lookups.earlier_event(session, event_type, trigger.key, content, now=now)
    automations = [] if first is not None else lookups.automations_for(session, trigger)
    many = trigger.audience.selects_many and first is None
    contact = None
    if first is None and not many:
        contact = _single_contact(session, trigger, now=now, lookups=lookups)
        if contact is not None:
            apply_field_options(contact, trigger.fields, now=now)
    event = {
        "id": event_id,
        "workspace_id": trigger.workspace_id,
        "event_type_id": event_type.id if event_type else None,
        "name": trigger.event_name,
        "key": trigger.key,
        "contact_id": contact.id if contact else None,
        "status": EventStatus.DUPLICATE if first else EventStatus.FANNING_OUT if many else EventStatus.PROCESSED,
        "matched_automations": len(automations),
        "fanout_cursor": None,
        "error": None if first is None else f"duplicate of event {first}",
        "request": request,
        "received_at": now,
        "processed_at": None if many else now,
    }
    lookups.note(event, content)
    if contact is None:
        return _Planned(event, [], [], [])
    run_rows: list[dict[str, Any]] = []
    webhooks: list[dict[str, Any]] = []
    if any(automation.is_workflow for automation in automations):
        seen = runs.EventSeen(event_id, trigger.event_name, trigger.key, now)
        types = lookups.field_types(session, trigger.workspace_id)
        run_rows, automations, webhooks = carry_out_runs(automations, contact, seen, trigger, types, now=now)
    planned = message_rows(
        trigger.workspace_id,
        event_id,
        [contact],
        automations,
        trigger.channel_filter,
        now=now,
        suppressed=lookups.suppressed(trigger.workspace_id),
    )
    return _Planned(event, run_rows, webhooks, planned)


def record_failed_event(session: Session, event_id: str, trigger: TriggerRequest, error: str, *, now: datetime) -> None:
    """Keep an accepted event whose processing gave up for good, with the reason, so it is visible, not lost.

    One recorded already is left as it is, unless it was still fanning out: then it is failed, and the messages of
    the chunks it planned before go out.
    """
    recorded = session.get(Event, event_id)
    if recorded is not None:
        if recorded.status == EventStatus.FANNING_OUT:
            recorded.status = EventStatus.FAILED
            recorded.error = error[:2000]
            recorded.processed_at = now
            session.flush()
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
