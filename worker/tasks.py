"""Tasks: signature in, one unit of work, one domain call. No logic here."""

import functools
from collections.abc import Callable
from typing import Any

from celery import Task
from celery.utils.time import get_exponential_backoff_interval
from sqlalchemy.orm import Session

import tripmail.automations.flow
import tripmail.delivery.flow
import tripmail.ingest.flow
import tripmail.webhooks.flow
from tripmail import faults, queue
from tripmail.config import get_settings
from tripmail.delivery.claims import give_up_run
from tripmail.ids import utcnow
from tripmail.schemas.trigger import TriggerRequest
from worker.app import GivesUpWhenLost, celery, sending, sessions, webhook_client


def retried_while_transient(run: Callable[..., None]) -> Callable[..., None]:
    """Try the task again, with backoff, when the database or Redis was unreachable or locked (tripmail.faults); let
    it fail at once on anything else, which would come back on every try.

    Every task may run again: process_events finds its events recorded and re-enqueues what is still pending;
    deliver_messages claims nothing twice. Tried again for as long as it lasts: with a limit, an outage longer than
    the limit, such as a PostgreSQL restart or failover, would store the task's events as failed, or lose them when
    the database is still away for that write too. Only what tripmail.faults calls transient is retried: retrying any
    OperationalError (as Celery's autoretry_for does) would retry SQLite's "too many SQL variables" forever, and the
    events of other workspaces in the task would wait with it.
    """

    @functools.wraps(run)
    def attempt(self: Task, *args: Any, **kwargs: Any) -> None:
        try:
            run(self, *args, **kwargs)
        except Exception as exc:
            if not faults.is_transient(exc):
                raise
            wait = get_exponential_backoff_interval(
                factor=1, retries=self.request.retries, maximum=get_settings().retry_wait_max_s, full_jitter=True
            )
            raise self.retry(exc=exc, countdown=wait, max_retries=None) from exc

    return attempt


class RecordsFailedEvents(GivesUpWhenLost):
    """When processing events gives up for good, the events not recorded yet are stored as failed with the reason."""

    def give_up(self, session: Session, reason: str, *args: Any) -> None:
        # A redelivered run takes every pending message of its events for its own (tripmail.ingest.flow.process_events).
        [pairs] = args
        event_ids = [event_id for event_id, _ in pairs]
        give_up_run(session, run_id=self.request.id, reason=reason, now=utcnow(), event_ids=event_ids)

    def on_failure(
        self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any], einfo: Any
    ) -> None:
        [pairs] = args
        for event_id, trigger in pairs:
            tripmail.ingest.flow.fail_event(
                sessions(), event_id, TriggerRequest.read_back(trigger), faults.reason(exc), now=utcnow()
            )


@celery.task(name=queue.PROCESS_EVENTS, base=RecordsFailedEvents, bind=True, max_retries=None)
@retried_while_transient
def process_events(self: Task, pairs: list[tuple[str, dict[str, Any]]]) -> None:
    """Record accepted events and fan them out into messages; running it twice is harmless. Full batches go to
    delivery tasks in their lane and the rest is sent here (tripmail.delivery.flow.InlineRemainder says why)."""
    settings = get_settings()
    tripmail.delivery.flow.deliver_planned(
        sessions(),
        lambda enqueue: tripmail.ingest.flow.process_events(
            sessions(),
            [(event_id, TriggerRequest.read_back(trigger)) for event_id, trigger in pairs],
            enqueue=enqueue,
            batch_size=settings.send_batch_size,
            clock=utcnow,
            run_id=self.request.id,
        ),
        run_id=self.request.id,
        sending=sending,
        settings=settings,
        publish=_publish,
        clock=utcnow,
    )


@celery.task(name=queue.CARRY_ON_RUNS, bind=True, base=GivesUpWhenLost, max_retries=None)
@retried_while_transient
def carry_on_runs(self: Task, run_ids: list[int]) -> None:
    """Carry on runs whose wait is over and send what they plan; running it twice is harmless (a run is carried
    on by one transaction only, and its messages are claimed before they are sent)."""
    tripmail.delivery.flow.deliver_after(
        sessions(),
        lambda: tripmail.automations.flow.carry_on_runs(sessions(), run_ids, clock=utcnow),
        run_id=self.request.id,
        sending=sending,
        settings=get_settings(),
        clock=utcnow,
    )


@celery.task(name=queue.FIRE_WEBHOOKS, bind=True, base=GivesUpWhenLost, max_retries=None)
@retried_while_transient
def fire_webhooks(self: Task, delivery_ids: list[int]) -> None:
    """POST due webhook deliveries; each is claimed first, and retried later by the scheduler when it failed."""
    tripmail.webhooks.flow.fire_webhooks(sessions(), delivery_ids, client=webhook_client(), clock=utcnow)


def _publish(message_ids: list[int], transactional: bool) -> None:
    deliver_messages.apply_async([message_ids], queue=queue.queue_for(transactional=transactional))


class DeliversMessages(GivesUpWhenLost):
    def give_up(self, session: Session, reason: str, *args: Any) -> None:
        [message_ids] = args
        give_up_run(session, run_id=self.request.id, reason=reason, now=utcnow(), message_ids=message_ids)


@celery.task(name=queue.DELIVER_MESSAGES, bind=True, base=DeliversMessages, max_retries=None)
@retried_while_transient
def deliver_messages(self: Task, message_ids: list[int]) -> None:
    """Send a batch of planned messages; the transient failures wait in the database for the scheduler."""
    tripmail.delivery.flow.deliver_batch(
        sessions(), message_ids, run_id=self.request.id, sending=sending, settings=get_settings(), clock=utcnow
    )
