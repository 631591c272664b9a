"""The ingest path: claim the dedupe key, enqueue by task name, answer. No SMTP, no rendering."""

import hashlib
import logging
from dataclasses import dataclass

from fastapi import Request
from kombu.exceptions import OperationalError
from redis import Redis
from redis.exceptions import RedisError

from tripmail import queue
from tripmail.audience import field_types
from tripmail.automations import automations_for, count_matching_automations
from tripmail.contacts import find_contact, upsert_contact
from tripmail.errors import NotFound, Unavailable, UnknownEventType
from tripmail.events import DEFAULT_DEDUPE_WINDOW_S, find_event_type
from tripmail.fields import typed_contact_fields
from tripmail.ids import new_id, normalize_key, utcnow
from tripmail.models import Contact, EventType
from tripmail.schemas.accepted import Accepted
from tripmail.schemas.trigger import TriggerRequest

log = logging.getLogger(__name__)

CLAIM_UNTIL_QUEUED_S = 60


@dataclass(frozen=True)
class Submitted:
    accepted: Accepted
    event_type: EventType | None
    # Only when the dialect asked for the contact to be upserted before answering.
    contact: Contact | None


def dedupe_key(trigger: TriggerRequest) -> str:
    # Hashed so any keyValue up to 300 characters makes a short, safe Redis key.
    digest = hashlib.sha256(trigger.key.encode() if trigger.key else b"").hexdigest()
    return f"tripmail:dedupe:{trigger.workspace_id}:{normalize_key(trigger.event_name)}:{digest}"


def submit(request: Request, trigger: TriggerRequest, *, upsert_contact_now: bool = False) -> Submitted:
    """Check what the answer needs, claim the trigger's key for its dedupe window, and enqueue it once.

    `upsert_contact_now` is for dialects whose answer shows the stored contact (cocomail); the worker's own
    upsert of the same values then changes nothing.
    """
    sessions = request.app.state.sessions
    with sessions() as session:
        event_type = find_event_type(session, trigger.workspace_id, trigger.event) if trigger.event else None
        if trigger.event is not None and event_type is None and not trigger.create_event_type:
            raise UnknownEventType(f"Event with identifier {trigger.event} not found", field="event")
        if (
            trigger.audience.contact_id is not None
            and find_contact(session, trigger.workspace_id, trigger.audience) is None
        ):
            raise NotFound(f"Contact {trigger.audience.contact_id} not found", field="id")
        if trigger.event is not None:
            matching = count_matching_automations(session, trigger.workspace_id, trigger.event)
        else:
            matching = len(automations_for(session, trigger))
        if trigger.contact_update.fields:
            typed = typed_contact_fields(field_types(session, trigger.workspace_id), trigger.contact_update.fields)
            trigger = trigger.model_copy(
                update={"contact_update": trigger.contact_update.model_copy(update={"fields": typed})}
            )
    contact = None
    if upsert_contact_now:
        with sessions.begin() as session:
            contact = upsert_contact(
                session, trigger.workspace_id, trigger.audience, trigger.contact_update, now=utcnow()
            )
    return Submitted(_enqueue_once(request, trigger, event_type, matching), event_type, contact)


def _enqueue_once(request: Request, trigger: TriggerRequest, event_type: EventType | None, matching: int) -> Accepted:
    window = event_type.dedupe_window_s if event_type else DEFAULT_DEDUPE_WINDOW_S
    event_id = new_id()
    claim = dedupe_key(trigger) if trigger.key and window > 0 else None
    store: Redis = request.app.state.redis
    if claim is not None:
        try:
            # Held briefly until the enqueue succeeds, then for the whole window: an api that dies in between
            # leaves a claim that lapses, so the client's retry is not refused as a duplicate of nothing.
            first = store.set(claim, event_id, nx=True, get=True, ex=min(window, CLAIM_UNTIL_QUEUED_S))
        except RedisError as exc:
            raise Unavailable("the queue (Redis) is not reachable; nothing was accepted, retry later") from exc
        if first is not None:
            return Accepted(id=str(first), duplicate=True, matching_automations=matching)
    try:
        request.app.state.celery.send_task(queue.PROCESS_EVENT, args=[event_id, trigger.model_dump(mode="json")])
    except OperationalError as exc:
        if claim is not None:
            _release(store, claim, event_id)
        raise Unavailable("the queue (Redis) is not reachable; nothing was accepted, retry later") from exc
    if claim is not None:
        try:
            store.expire(claim, window)
        except RedisError:
            # The event is queued; a repeat after the short claim lapses is still caught by the worker's check.
            log.warning("could not extend dedupe key %s to its window", claim)
    return Accepted(id=event_id, matching_automations=matching)


def _release(store: Redis, claim: str, event_id: str) -> None:
    """Give the key back, so the client's retry is not answered as a duplicate of an event that was never queued."""
    try:
        if store.get(claim) == event_id:
            store.delete(claim)
    except RedisError:
        log.warning("could not release dedupe key %s after a failed enqueue", claim)
