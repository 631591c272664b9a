"""The transactions of ingest: recording accepted events and fanning their audiences out, a transaction per
chunk, with each chunk's messages enqueued only after it commits; and storing an event that failed for good."""

import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from tripmail.delivery.claims import settle_unfinished
from tripmail.errors import TripmailError
from tripmail.faults import is_transient, reason
from tripmail.ingest.fan_out import fan_out_chunk
from tripmail.ingest.recording import record_event, record_events, record_failed_event
from tripmail.queue import ByLane
from tripmail.schemas.trigger import TriggerRequest

log = logging.getLogger(__name__)


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
# recording a 1,000-event batch at once would hold it for long, and every other process's hand-over commits (and
# so its SMTP connections) would wait as long (bench/results.md, What the code's shape rests on). Chunks also let
# full delivery batches start while the rest is recorded.
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
