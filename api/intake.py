"""The ingest path: claim the dedupe key, enqueue by task name, answer. No SMTP, no rendering."""

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from kombu.exceptions import OperationalError
from redis import Redis
from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from api.lookups import SetupCache
from tripmail import queue
from tripmail.automations import automations_for
from tripmail.contacts import find_contact, upsert_contact
from tripmail.errors import NotFound, TripmailError, Unavailable, UnknownEventType
from tripmail.events import DEFAULT_DEDUPE_WINDOW_S
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


@dataclass(frozen=True)
class _Checked:
    trigger: TriggerRequest
    event_type: EventType | None
    matching: int

    @property
    def dedupe_window_s(self) -> int:
        return self.event_type.dedupe_window_s if self.event_type else DEFAULT_DEDUPE_WINDOW_S

    @property
    def claim(self) -> str | None:
        """The Redis key that makes a repeat of this trigger's key a duplicate, when it has one."""
        return dedupe_key(self.trigger) if self.trigger.key and self.dedupe_window_s > 0 else None


def _check(session: Session, trigger: TriggerRequest, setup: SetupCache) -> _Checked:
    """What the answer needs: the workspace's set-up from the cache, a named contact from the database."""
    if trigger.event is not None:
        event_type, matching = setup.event(session, trigger.workspace_id, trigger.event)
        if event_type is None and not trigger.create_event_type:
            raise UnknownEventType(f"Event with identifier {trigger.event} not found", field="event")
    else:
        event_type, matching = None, len(automations_for(session, trigger))
    if (
        trigger.audience.contact_id is not None
        and find_contact(session, trigger.workspace_id, trigger.audience) is None
    ):
        raise NotFound(f"Contact {trigger.audience.contact_id} not found", field="id")
    if trigger.contact_update.fields:
        typed = typed_contact_fields(setup.field_types(session, trigger.workspace_id), trigger.contact_update.fields)
        trigger = trigger.model_copy(
            update={"contact_update": trigger.contact_update.model_copy(update={"fields": typed})}
        )
    return _Checked(trigger, event_type, matching)


def submit(request: Request, trigger: TriggerRequest, *, upsert_contact_now: bool = False) -> Submitted:
    """Check what the answer needs, claim the trigger's key for its dedupe window, and enqueue it once.

    `upsert_contact_now` is for dialects whose answer shows the stored contact (cocomail); the worker's own
    upsert of the same values then changes nothing.
    """
    sessions = request.app.state.sessions
    with sessions() as session:
        checked = _check(session, trigger, request.app.state.setup)
    contact = None
    if upsert_contact_now:
        with sessions.begin() as session:
            contact = upsert_contact(
                session, trigger.workspace_id, trigger.audience, checked.trigger.contact_update, now=utcnow()
            )
    [accepted] = _enqueue_once(request, [checked])
    if isinstance(accepted, TripmailError):
        raise accepted
    return Submitted(accepted, checked.event_type, contact)


def submit_batch(request: Request, triggers: list[TriggerRequest]) -> list[Accepted | TripmailError]:
    """Each trigger checked, claimed and answered on its own; all that are new enqueued as one task.

    One task for the batch instead of one per event: publishing is the costliest step of ingest, and the
    worker then sends the batch's messages together.
    """
    checked: list[_Checked | TripmailError] = []
    with request.app.state.sessions() as session:
        for trigger in triggers:
            try:
                checked.append(_check(session, trigger, request.app.state.setup))
            except TripmailError as exc:
                checked.append(exc)
    answers = iter(_enqueue_once(request, [item for item in checked if isinstance(item, _Checked)]))
    return [item if isinstance(item, TripmailError) else next(answers) for item in checked]


def _enqueue_once(request: Request, checked: list[_Checked]) -> list[Accepted | TripmailError]:
    """Claim each key, enqueue every trigger that is not a duplicate in one task, then hold the claims."""
    if not checked:
        return []
    store: Redis = request.app.state.redis
    event_ids = [new_id() for _ in checked]
    claims = [item.claim for item in checked]
    try:
        firsts = _claim_keys(store, claims, event_ids, checked)
    except RedisError:
        down = Unavailable("the queue (Redis) is not reachable; nothing was accepted, retry later")
        return [down for _ in checked]
    answers: list[Accepted | TripmailError] = []
    queued: list[tuple[str, dict[str, Any]]] = []
    held: list[tuple[str, str, int]] = []
    for item, event_id, claim, first in zip(checked, event_ids, claims, firsts, strict=True):
        if first is not None:
            answers.append(Accepted(id=str(first), duplicate=True, matching_automations=item.matching))
            continue
        answers.append(Accepted(id=event_id, matching_automations=item.matching))
        queued.append((event_id, item.trigger.model_dump(mode="json")))
        if claim is not None:
            held.append((claim, event_id, item.dedupe_window_s))
    if not queued:
        return answers
    try:
        request.app.state.celery.send_task(queue.PROCESS_EVENTS, args=[queued])
    except OperationalError:
        _release(store, held)
        down = Unavailable("the queue (Redis) is not reachable; nothing was accepted, retry later")
        return [down if isinstance(answer, Accepted) and not answer.duplicate else answer for answer in answers]
    _hold_for_window(store, held)
    return answers


def _claim_keys(
    store: Redis, claims: list[str | None], event_ids: list[str], checked: list[_Checked]
) -> list[str | None]:
    """SET NX GET for every key in one round trip: None where this request got the key, else the first event's id.

    Held briefly until the enqueue succeeds, then for the whole window: an api that dies in between leaves a
    claim that lapses, so the client's retry is not refused as a duplicate of nothing. Two items of one batch
    with the same key: the second gets the first's id.
    """
    if not any(claims):
        return [None] * len(claims)
    pipeline = store.pipeline(transaction=False)
    for claim, event_id, item in zip(claims, event_ids, checked, strict=True):
        if claim is not None:
            pipeline.set(claim, event_id, nx=True, get=True, ex=min(item.dedupe_window_s, CLAIM_UNTIL_QUEUED_S))
    replies = iter(pipeline.execute())
    return [next(replies) if claim is not None else None for claim in claims]


def _hold_for_window(store: Redis, held: list[tuple[str, str, int]]) -> None:
    if not held:
        return
    try:
        pipeline = store.pipeline(transaction=False)
        for claim, _event_id, window in held:
            pipeline.expire(claim, window)
        pipeline.execute()
    except RedisError:
        # The events are queued; a repeat after the short claim lapses is still caught by the worker's check.
        log.warning("could not extend %d dedupe key(s) to their window", len(held))


def _release(store: Redis, held: list[tuple[str, str, int]]) -> None:
    """Give the keys back, so the client's retry is not answered as a duplicate of events never queued."""
    for claim, event_id, _window in held:
        try:
            if store.get(claim) == event_id:
                store.delete(claim)
        except RedisError:
            log.warning("could not release dedupe key %s after a failed enqueue", claim)
