"""Tasks: signature in, one unit of work, one domain call. No logic here."""

import logging
import random
from typing import Any

from celery import Task
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import OperationalError

from tripmail import delivery, events, queue
from tripmail.config import get_settings
from tripmail.ids import utcnow
from tripmail.schemas.trigger import TriggerRequest
from tripmail.smtp import parse_smtp_url
from worker.app import celery, sessions

log = logging.getLogger(__name__)

# The database or Redis was unreachable for a moment. Both tasks may run again: process_events finds its events
# recorded and re-enqueues what is still pending; deliver_messages claims nothing twice.
RETRY_TRANSIENT: dict[str, Any] = {
    "autoretry_for": (OperationalError, BrokerError),
    "retry_backoff": True,
    "retry_jitter": True,
    "max_retries": 8,
}


class RecordsFailedEvents(Task):  # type: ignore[misc]
    """When processing events gives up for good, the events not recorded yet are stored as failed with the reason."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: tuple[Any, ...], kwargs: dict[str, Any], einfo: Any
    ) -> None:
        [pairs] = args
        with sessions().begin() as session:
            for event_id, trigger in pairs:
                events.record_failed_event(
                    session,
                    event_id,
                    TriggerRequest.model_validate(trigger),
                    f"{type(exc).__name__}: {exc}",
                    now=utcnow(),
                )


@celery.task(name=queue.PROCESS_EVENTS, base=RecordsFailedEvents, **RETRY_TRANSIENT)
def process_events(pairs: list[tuple[str, dict[str, Any]]]) -> None:
    """Record accepted events and fan them out into messages; running it twice is harmless."""
    events.process_events(
        sessions(),
        [(event_id, TriggerRequest.model_validate(trigger)) for event_id, trigger in pairs],
        enqueue=_enqueue_delivery,
        batch_size=get_settings().send_batch_size,
        clock=utcnow,
    )


def _enqueue_delivery(message_ids: list[int]) -> None:
    deliver_messages.delay(message_ids)


@celery.task(name=queue.DELIVER_MESSAGES, bind=True, **RETRY_TRANSIENT)
def deliver_messages(self: Task, message_ids: list[int]) -> None:
    """Send a batch of planned messages; retry the transient failures with backoff and jitter."""
    settings = get_settings()
    report = delivery.deliver_messages(
        sessions(),
        message_ids,
        run_id=self.request.id,
        target=parse_smtp_url(settings.smtp_url.get_secret_value()),
        connections=settings.smtp_connections,
        timeout=settings.smtp_timeout_s,
        # Stop sending well inside the hard time limit, so the results so far are recorded, not killed.
        deadline=settings.task_time_limit_s * 0.8,
        max_attempts=settings.send_max_retries + 1,
        public_url=settings.public_url,
        clock=utcnow,
    )
    log.info(
        "delivered batch: %d sent, %d failed, %d unknown, %d to retry",
        report.sent,
        report.failed,
        report.unknown,
        len(report.retry_ids),
    )
    if report.retry_ids:
        # The attempt limit lives on each message row (send_max_retries), so Celery's own count is not capped.
        countdown = min(300, 2**self.request.retries) + random.uniform(0, 1)  # noqa: S311 - jitter, not security
        raise self.retry(args=[report.retry_ids], countdown=countdown, max_retries=None)
