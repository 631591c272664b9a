"""Event types and the recording of accepted events."""

import logging
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, bindparam, insert, select
from sqlalchemy.orm import Session, sessionmaker

from tripmail.automations import runs
from tripmail.automations.program import Started, automations_for, transactional_steps
from tripmail.contacts.audience import (
    CHUNK,
    compile_query,
    contacts_page,
    custom_field_query,
    field_types,
    recipients_page,
)
from tripmail.contacts.fields import apply_field_options
from tripmail.contacts.store import find_contact, new_contact_values, update_contact, upsert_contact
from tripmail.db import insert_if_absent, insert_new
from tripmail.delivery.claims import settle_unfinished
from tripmail.delivery.planning import (
    Recipient,
    add_messages,
    message_rows,
    pending_message_ids,
    plan_messages,
    recipient,
)
from tripmail.delivery.suppressions import suppressed_addresses
from tripmail.errors import TripmailError
from tripmail.faults import is_transient, reason
from tripmail.ids import normalize_key
from tripmail.ingest.dedupe import content_digest
from tripmail.models import AutomationRun, Contact, Event, EventStatus, EventType, table_of
from tripmail.queue import ByLane
from tripmail.rendering.context import EventColumns
from tripmail.schemas.trigger import TriggerRequest

log = logging.getLogger(__name__)

DEFAULT_DEDUPE_WINDOW_S = 24 * 3600


# The statements every one-contact event runs are built once: building an ORM statement cost more than running
# it on SQLite (350 against 100 µs for a select by key, measured here). Those that need no entity name table
# columns: a statement of ORM attributes takes the ORM's execution path, about twice the cost of the same Core
# statement (346 against 179 µs for _RECORDED).
_EVENTS = table_of(Event)
_EVENT_TYPE_BY_KEY = select(EventType).where(
    EventType.workspace_id == bindparam("ws"), EventType.key_normalized == bindparam("key")
)
_RECORDED = select(_EVENTS.c.id).where(_EVENTS.c.id.in_(bindparam("ids", expanding=True)))
_CONTACTS_BY_EMAIL = select(Contact).where(
    Contact.workspace_id == bindparam("ws"), Contact.email.in_(bindparam("emails", expanding=True))
)
_FIRST_STATUSES = (EventStatus.PROCESSED, EventStatus.FANNING_OUT)
# Recorded events of a type with one of these keys. The dedupe window is applied to the few rows this returns, in
# Python: with `received_at >= ?` (or ORDER BY received_at) in the query, SQLite chose the (workspace,
# received_at) index and read every event of the window (7-9 ms per event at 10,000 events) instead of the rows
# of these keys.
_WITH_KEYS = select(_EVENTS.c.key, _EVENTS.c.id, _EVENTS.c.received_at, _EVENTS.c.request).where(
    _EVENTS.c.workspace_id == bindparam("ws"),
    _EVENTS.c.event_type_id == bindparam("type"),
    _EVENTS.c.status.in_(_FIRST_STATUSES),
    _EVENTS.c.key.in_(bindparam("keys", expanding=True)),
)
_ADD_EVENT = insert(_EVENTS)
_ADD_RUN = insert(table_of(AutomationRun))


def find_event_type(session: Session, workspace_id: int, key: str) -> EventType | None:
    return session.scalars(_EVENT_TYPE_BY_KEY, {"ws": workspace_id, "key": normalize_key(key)}).one_or_none()


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
    # Core, not the ORM: nothing reads the events back in this transaction, and the unit of work cost more than
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
        run_rows, automations, webhooks = _carry_out(automations, contact, seen, trigger, types, now=now)
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


def _carry_out(
    automations: list[Started],
    contact: Contact,
    event: EventColumns,
    trigger: TriggerRequest,
    field_types: dict[str, str],
    *,
    now: datetime,
) -> tuple[list[dict[str, Any]], list[Started], list[dict[str, Any]]]:
    """Carry out the runs of the workflow automations for the contact; their rows, the automations with the
    send_email steps to plan for the contact (all of them for the others, those each run reached for its own),
    and the webhook deliveries the runs made."""
    rows: list[dict[str, Any]] = []
    planned: list[Started] = []
    webhooks: list[dict[str, Any]] = []
    for automation in automations:
        if not automation.is_workflow:
            planned.append(automation)
            continue
        carried = runs.carry_out(
            automation,
            contact=contact,
            event=event,
            workspace_id=trigger.workspace_id,
            data=trigger.data,
            custom_data=trigger.hooks,
            field_types=field_types,
            now=now,
        )
        rows.append(carried.row)
        planned.append(carried.sends)
        webhooks += carried.webhooks
    return rows, planned, webhooks


def fan_out_chunk(session: Session, event_id: str, *, now: datetime) -> tuple[ByLane, bool]:
    """Plan the next chunk of a fanning-out event's audience; the new message ids, and whether it is done."""
    event = session.get(Event, event_id)
    if event is None or event.status != EventStatus.FANNING_OUT:
        return ByLane(), True
    trigger = TriggerRequest.read_back(event.request)
    condition = audience_condition(session, trigger)
    after = event.fanout_cursor or ""
    automations = automations_for(session, trigger)
    contacts: Sequence[Recipient]
    if _changes_contacts(trigger) or any(automation.is_workflow for automation in automations):
        loaded = contacts_page(session, trigger.workspace_id, condition, after=after, limit=CHUNK)
        if _changes_contacts(trigger):
            for contact in loaded:
                update_contact(contact, trigger.audience, trigger.contact_update, now=now)
                apply_field_options(contact, trigger.fields, now=now)
        planned = _fan_out_runs(session, event, trigger, loaded, automations, now=now)
        contacts = loaded
    else:
        contacts = recipients_page(session, trigger.workspace_id, condition, after=after, limit=CHUNK)
        planned = plan_messages(
            session, event.workspace_id, event.id, contacts, automations, trigger.channel_filter, now=now
        )
    if contacts:
        event.contact_id = event.contact_id or contacts[0].id
        event.fanout_cursor = contacts[-1].id
    if len(contacts) < CHUNK:
        event.status = EventStatus.PROCESSED
        event.processed_at = now
    return planned, event.status == EventStatus.PROCESSED


def _fan_out_runs(
    session: Session,
    event: Event,
    trigger: TriggerRequest,
    contacts: Sequence[Contact],
    automations: list[Started],
    *,
    now: datetime,
) -> ByLane:
    """plan_messages for a chunk when automations have runs: each contact's runs choose its messages. A chunk
    planned again (a redelivered task) finds its runs and messages there and adds none."""
    seen = runs.EventSeen(event.id, event.name, event.key, event.received_at)
    types = field_types(session, event.workspace_id)
    addresses = {recipient(contact, trigger.channel_filter) for contact in contacts}
    suppressed = suppressed_addresses(session, event.workspace_id, {a for a in addresses if a})
    run_rows: list[dict[str, Any]] = []
    webhooks: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for contact in contacts:
        rows, planned, made = _carry_out(automations, contact, seen, trigger, types, now=now)
        run_rows += rows
        webhooks += made
        messages += message_rows(
            event.workspace_id, event.id, [contact], planned, trigger.channel_filter, now=now, suppressed=suppressed
        )
    insert_new(session, AutomationRun, run_rows, ["event_id", "automation_id", "contact_id"], "id")
    runs.add_webhooks(session, webhooks)
    return add_messages(session, messages, transactional_steps=transactional_steps(automations))


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
    enqueue: Callable[[ByLane], None],
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


# One-contact events recorded per transaction. On SQLite a write transaction holds the database's one write lock:
# recording a 1,000-event batch at once held it for seconds, and every other process's hand-over commits (and so
# its SMTP connections) waited that long. Chunks also let full delivery batches start while the rest is recorded.
RECORD_TOGETHER = 100


def process_events(
    sessions: sessionmaker[Session],
    events: Sequence[tuple[str, TriggerRequest]],
    *,
    enqueue: Callable[[ByLane], None],
    batch_size: int,
    clock: Callable[[], datetime],
    run_id: str | None = None,
) -> None:
    """Process several accepted events, sending their messages together.

    `run_id` names the task run when it sends messages itself: the claims an earlier try of it left open are
    settled first, so those messages count as pending again.

    The one-contact events are recorded RECORD_TOGETHER to a transaction that shares its lookups; if one of them
    is refused, each of that chunk is recorded on its own instead. Audiences of many fan out as in process_event,
    each on its own. An event that fails for a reason that would come back on every try (refused, or a database
    error that is not transient) is stored as failed with it, and the others go on: the events of one task come
    from many workspaces. A transient failure (tripmail.faults) stops the task, to be tried again whole.

    Messages of different events share delivery batches of `batch_size`, so a burst of events costs one delivery
    task per batch rather than one per event; a batch holds the messages of one lane, so a marketing fan-out's never
    wait in the fast lane, nor a password reset behind them. Ids held back for a fuller batch were committed
    already: if the worker dies first, the redelivered task finds them pending and enqueues them then.
    """
    # Settled in the first chunk's transaction when there is one, which saves a transaction per task.
    settle_run = run_id
    held = ByLane()

    def hold(planned: ByLane) -> None:
        held.extend(planned)
        for transactional, lane in ((True, held.transactional), (False, held.bulk)):
            while len(lane) >= batch_size:
                enqueue(ByLane.of(lane[:batch_size], transactional=transactional))
                del lane[:batch_size]

    single = [(event_id, trigger) for event_id, trigger in events if not trigger.audience.selects_many]
    for start in range(0, len(single), RECORD_TOGETHER):
        chunk = single[start : start + RECORD_TOGETHER]
        planned = _record_together(sessions, chunk, now=clock(), settle_run=settle_run)
        if planned is None:  # rolled back, the settling with it
            if settle_run is not None:
                _settle(sessions, settle_run, now=clock())
            for event_id, trigger in chunk:
                _process_alone(sessions, event_id, trigger, enqueue=hold, clock=clock)
        else:
            hold(planned)
        settle_run = None
    if settle_run is not None:
        _settle(sessions, settle_run, now=clock())
    for event_id, trigger in events:
        if trigger.audience.selects_many:
            _process_alone(sessions, event_id, trigger, enqueue=hold, clock=clock)
    if held.ids:
        enqueue(held)


def _settle(sessions: sessionmaker[Session], run_id: str, *, now: datetime) -> None:
    with sessions.begin() as session:
        settle_unfinished(session, run_id=run_id, now=now)


def _record_together(
    sessions: sessionmaker[Session],
    events: Sequence[tuple[str, TriggerRequest]],
    *,
    now: datetime,
    settle_run: str | None = None,
) -> ByLane | None:
    """Record one-contact events in one transaction; their message ids, or None when one of them was refused.

    `settle_run`: settle that run's open claims first, in the same transaction.
    """
    try:
        with sessions.begin() as session:
            if settle_run is not None:
                settle_unfinished(session, run_id=settle_run, now=now)
            return record_events(session, events, now=now)
    except Exception as exc:
        if is_transient(exc):
            raise
        log.info("recording %d events together failed (%s); recording each on its own", len(events), reason(exc))
        return None


def _process_alone(
    sessions: sessionmaker[Session],
    event_id: str,
    trigger: TriggerRequest,
    *,
    enqueue: Callable[[ByLane], None],
    clock: Callable[[], datetime],
) -> None:
    try:
        process_event(sessions, event_id, trigger, enqueue=enqueue, clock=clock)
    except Exception as exc:
        if is_transient(exc):
            raise
        if isinstance(exc, TripmailError):
            log.info("event %s refused: %s", event_id, reason(exc))
        else:  # not the request's doing: worth its traceback
            log.exception("event %s failed: %s", event_id, reason(exc))
        fail_event(sessions, event_id, trigger, reason(exc), now=clock())


def fail_event(
    sessions: sessionmaker[Session], event_id: str, trigger: TriggerRequest, error: str, *, now: datetime
) -> None:
    """record_failed_event in a transaction of its own; when even that is refused (the event's workspace is gone),
    the failure is logged and the caller goes on with its other events."""
    try:
        with sessions.begin() as session:
            record_failed_event(session, event_id, trigger, error, now=now)
    except Exception as exc:
        if is_transient(exc):
            raise
        log.error("event %s failed (%s) and could not be stored as failed: %s", event_id, error, reason(exc))


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
