"""Event history: the events of a workspace, newest first, and one event with its runs, messages and webhooks."""

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tripmail.errors import NotFound
from tripmail.ids import normalize_key
from tripmail.models import (
    Automation,
    AutomationRun,
    Event,
    EventType,
    Message,
    MessageAttempt,
    Template,
    WebhookDelivery,
)
from tripmail.schemas.history import (
    AttemptView,
    EventDetail,
    EventPage,
    EventSummary,
    MessageView,
    RunView,
    WebhookView,
)


def list_events(
    session: Session,
    workspace_id: int,
    *,
    event_type: str | None = None,
    contact_id: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before: str | None = None,
    limit: int = 50,
) -> EventPage:
    """Newest first, `limit` to a page; `before` (an event id, the previous page's next_before) pages back."""
    query = select(Event).where(Event.workspace_id == workspace_id)
    if event_type is not None:
        query = query.join(EventType, Event.event_type_id == EventType.id).where(
            EventType.key_normalized == normalize_key(event_type)
        )
    if contact_id is not None:
        # An audience of many names one contact on the event: its other contacts are found through their messages.
        mailed = select(Message.event_id).where(Message.workspace_id == workspace_id, Message.contact_id == contact_id)
        query = query.where(or_(Event.contact_id == contact_id, Event.id.in_(mailed)))
    if status is not None:
        query = query.where(Event.status == status)
    if since is not None:
        query = query.where(Event.received_at >= since)
    if until is not None:
        query = query.where(Event.received_at < until)
    if before is not None:
        query = query.where(Event.id < before)
    rows = session.scalars(query.order_by(Event.id.desc()).limit(limit + 1)).all()
    page = [_summary(event) for event in rows[:limit]]
    return EventPage(events=page, next_before=page[-1].id if len(rows) > limit else None)


def _summary(event: Event) -> EventSummary:
    return EventSummary(
        id=event.id,
        name=event.name,
        key=event.key,
        status=event.status,
        contact_id=event.contact_id,
        matched_automations=event.matched_automations,
        received_at=event.received_at,
        processed_at=event.processed_at,
        error=event.error,
    )


def event_detail(session: Session, workspace_id: int, event_id: str) -> EventDetail:
    """The event as recorded, with everything it led to; NotFound also while it waits in the queue."""
    event = session.get(Event, event_id)
    if event is None or event.workspace_id != workspace_id:
        raise NotFound(f"no event {event_id} recorded in this workspace (an event just accepted may still be queued)")
    runs = session.scalars(select(AutomationRun).where(AutomationRun.event_id == event_id)).all()
    messages = session.execute(
        select(Message, Template.key)
        .join(Template, Message.template_id == Template.id)
        .where(Message.event_id == event_id)
        .order_by(Message.id)
    ).all()
    webhooks = session.scalars(
        select(WebhookDelivery).where(WebhookDelivery.event_id == event_id).order_by(WebhookDelivery.id)
    ).all()
    attempts: dict[int, list[AttemptView]] = {}
    message_ids = [message.id for message, _ in messages]
    for attempt in session.scalars(
        select(MessageAttempt).where(MessageAttempt.message_id.in_(message_ids)).order_by(MessageAttempt.id)
    ):
        attempts.setdefault(attempt.message_id, []).append(
            AttemptView(
                attempted_at=attempt.attempted_at,
                outcome=attempt.outcome,
                smtp_code=attempt.smtp_code,
                smtp_reply=attempt.smtp_reply,
            )
        )
    automation_ids = {run.automation_id for run in runs} | {message.automation_id for message, _ in messages}
    names = dict(session.execute(select(Automation.id, Automation.name).where(Automation.id.in_(automation_ids))).all())
    return EventDetail(
        **_summary(event).model_dump(),
        body=event.request,
        automations=names,
        runs=[
            RunView(
                automation_id=run.automation_id,
                automation=names.get(run.automation_id, ""),
                contact_id=run.contact_id,
                status=run.status,
                position=run.position,
                wake_at=run.wake_at,
                error=run.error,
                steps=run.trail,
            )
            for run in runs
        ],
        messages=[
            MessageView(
                id=message.id,
                automation_id=message.automation_id,
                automation=names.get(message.automation_id, ""),
                step_id=message.step_id,
                template=template,
                contact_id=message.contact_id,
                to=message.to_address,
                status=message.status,
                message_id_header=message.message_id_header,
                smtp_code=message.smtp_code,
                smtp_reply=message.smtp_reply,
                sent_at=message.sent_at,
                attempts=attempts.get(message.id, []),
            )
            for message, template in messages
        ],
        webhooks=[
            WebhookView(
                id=webhook.id,
                automation_id=webhook.automation_id,
                step_id=webhook.step_id,
                url=webhook.url,
                status=webhook.status,
                attempts=webhook.attempts,
                last_code=webhook.last_code,
                last_error=webhook.last_error,
            )
            for webhook in webhooks
        ],
    )
