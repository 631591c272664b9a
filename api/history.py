"""GET /v1/events and GET /v1/events/{id}: the event history (esputnik's Automation > Event history)."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from api.auth import CONTACTS_READ, EVENTS_READ, Principal, bearer
from api.problems import problem_responses
from tripmail.ingest.history import event_detail, list_events
from tripmail.schemas.history import EventDetail, EventPage

router = APIRouter(tags=["history"])

EventReader = Annotated[Principal, Depends(bearer(EVENTS_READ))]
# One event shows its body and its messages' recipients: the contacts' addresses and fields.
ContactEventReader = Annotated[Principal, Depends(bearer((EVENTS_READ, CONTACTS_READ)))]


@router.get("/v1/events", responses=problem_responses(401, 403, 422, 429))
async def get_events(
    principal: EventReader,
    request: Request,
    type: Annotated[str | None, Query(max_length=100, description="Event-type key, case-insensitive.")] = None,
    contact: Annotated[str | None, Query(max_length=100, description="A contact id.")] = None,
    status: Annotated[
        str | None, Query(pattern="^(processed|fanning_out|duplicate|failed)$", description="The event's status.")
    ] = None,
    since: Annotated[datetime | None, Query(description="Received at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, Query(description="Received before (ISO 8601).")] = None,
    before: Annotated[str | None, Query(max_length=36, description="The previous page's next_before.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> EventPage:
    """Recorded events, newest first."""

    def read() -> EventPage:
        with request.app.state.sessions() as session:
            return list_events(
                session,
                principal.workspace_id,
                event_type=type,
                contact_id=contact,
                status=status,
                since=since,
                until=until,
                before=before,
                limit=limit,
            )

    return await run_in_threadpool(read)


@router.get("/v1/events/{event_id}", responses=problem_responses(401, 403, 404, 422, 429))
async def get_event(event_id: str, principal: ContactEventReader, request: Request) -> EventDetail:
    """One event: its body, the automations it matched, each run's steps, each message's status and attempts."""

    def read() -> EventDetail:
        with request.app.state.sessions() as session:
            return event_detail(session, principal.workspace_id, event_id)

    return await run_in_threadpool(read)
