"""The ingest path: check what the answer needs, then claim and enqueue through the app's Enqueuer."""

from dataclasses import dataclass

import anyio.from_thread
from fastapi import Request
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.enqueue import Answer, Checked, Enqueuer
from api.lookups import SetupCache
from tripmail.automations.program import automations_for
from tripmail.contacts.fields import typed_contact_fields
from tripmail.contacts.store import find_contact, upsert_contact
from tripmail.errors import NotFound, TripmailError, UnknownEventType
from tripmail.ids import utcnow
from tripmail.metrics import EVENTS
from tripmail.models import Contact, EventType
from tripmail.schemas.accepted import Accepted
from tripmail.schemas.trigger import TriggerRequest


@dataclass(frozen=True)
class Submitted:
    accepted: Accepted
    event_type: EventType | None
    # Only when the dialect asked for the contact to be upserted before answering.
    contact: Contact | None


def _check(
    sessions: sessionmaker[Session], trigger: TriggerRequest, setup: SetupCache, *, key_names_event: bool = True
) -> Checked:
    """What the answer needs: the workspace's set-up from the cache, a named contact from the database."""
    if trigger.event is not None:
        event_type, matching, transactional = setup.event(sessions, trigger.workspace_id, trigger.event)
        if event_type is None and not trigger.create_event_type:
            raise UnknownEventType(f"Event with identifier {trigger.event} not found", field="event")
    else:
        with sessions() as session:
            started = automations_for(session, trigger)
        event_type, matching = None, len(started)
        transactional = any(automation.mails_transactional for automation in started)
    if trigger.audience.contact_id is not None:
        with sessions() as session:
            if find_contact(session, trigger.workspace_id, trigger.audience) is None:
                raise NotFound(f"Contact {trigger.audience.contact_id} not found", field="id")
    if trigger.contact_update.fields:
        field_types = setup.field_types(sessions, trigger.workspace_id)
        # Only declared fields are converted; a trigger that sets none keeps its fields, without two model copies.
        if not field_types.keys().isdisjoint(trigger.contact_update.fields):
            typed = typed_contact_fields(field_types, trigger.contact_update.fields)
            trigger = trigger.model_copy(
                update={"contact_update": trigger.contact_update.model_copy(update={"fields": typed})}
            )
    return Checked(trigger, event_type, matching, transactional, key_names_event=key_names_event)


def _counted(request: Request, answers: list[Answer]) -> None:
    # The dialect is the path's /compat/<name>/ segment: the label only, no dialect logic.
    parts = request.url.path.split("/", 3)
    dialect = parts[2] if len(parts) > 2 and parts[1] == "compat" else "native"
    for answer in answers:
        EVENTS.labels(dialect, _outcome(answer)).inc()
    request.state.counted = True


_NATIVE_EVENT_PATHS = frozenset({"/v1/events", "/v1/events/batch"})


def count_refusal(request: Request, exc: TripmailError) -> None:
    """A request to an event endpoint refused before the intake answered it (a body that does not parse, a token
    that does not match): counted among the events answered, by the refusal's problem code."""
    posted_events = request.method == "POST" and (
        request.url.path in _NATIVE_EVENT_PATHS or request.url.path.startswith("/compat/")
    )
    if posted_events and not getattr(request.state, "counted", False):
        _counted(request, [exc])


def _outcome(answer: Answer) -> str:
    if isinstance(answer, TripmailError):
        return answer.code
    return "duplicate" if answer.duplicate else "accepted"


async def submit_event(request: Request, trigger: TriggerRequest) -> Accepted:
    """Check one native event and enqueue it once; on the event loop, for the hot path.

    A native trigger names its event and no contact id, so the check reads only the set-up cache; a miss
    reads the database here on the loop, once per workspace and event key per `setup_cache_s`.
    """
    try:
        checked = _check(request.app.state.sessions, trigger, request.app.state.setup)
    except TripmailError as exc:
        _counted(request, [exc])
        raise
    enqueuer: Enqueuer = request.app.state.enqueuer
    [answer] = await enqueuer.enqueue([checked])
    _counted(request, [answer])
    if isinstance(answer, TripmailError):
        raise answer
    return answer


def _check_each(request: Request, triggers: list[TriggerRequest]) -> list[Checked | TripmailError]:
    checked: list[Checked | TripmailError] = []
    for trigger in triggers:
        try:
            checked.append(_check(request.app.state.sessions, trigger, request.app.state.setup))
        except TripmailError as exc:
            checked.append(exc)
    return checked


async def submit_events(request: Request, triggers: list[TriggerRequest]) -> list[Answer]:
    """Each trigger checked, claimed and answered on its own; those that are new enqueued together.

    The checks run in the threadpool: a batch of many event keys may miss the cache for each of them.
    """
    checked = await run_in_threadpool(_check_each, request, triggers)
    enqueuer: Enqueuer = request.app.state.enqueuer
    answers = iter(await enqueuer.enqueue([item for item in checked if isinstance(item, Checked)]))
    answered = [item if isinstance(item, TripmailError) else next(answers) for item in checked]
    _counted(request, answered)
    return answered


def submit(request: Request, trigger: TriggerRequest, *, upsert_contact_now: bool = False) -> Submitted:
    """Check, claim and enqueue one trigger from a sync (threadpool) route: the dialects' path.

    `upsert_contact_now` is for dialects whose answer shows the stored contact (cocomail); the worker's own
    upsert of the same values then changes nothing. A dialect's key (esputnik's keyValue) names the contact, not
    the event: only a repeat of the same content is a duplicate.
    """
    sessions = request.app.state.sessions
    try:
        checked = _check(sessions, trigger, request.app.state.setup, key_names_event=False)
    except TripmailError as exc:
        _counted(request, [exc])
        raise
    contact = None
    if upsert_contact_now:
        with sessions.begin() as session:
            contact = upsert_contact(
                session, trigger.workspace_id, trigger.audience, checked.trigger.contact_update, now=utcnow()
            )
    enqueuer: Enqueuer = request.app.state.enqueuer
    [answer] = anyio.from_thread.run(enqueuer.enqueue, [checked])
    _counted(request, [answer])
    if isinstance(answer, TripmailError):
        raise answer
    return Submitted(answer, checked.event_type, contact)
