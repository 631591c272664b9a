"""The delivery flow: the transactions that claim, send and settle a batch of messages (the functions that take a
sessionmaker), and the policy of the tasks that deliver: which batches they publish to a lane and which they send
themselves, within what time. Each step's statements live in the modules beside it, in functions taking a session.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from tripmail.config import Settings
from tripmail.delivery.claims import Claim, claim_messages, settle_unfinished, store_message_id_headers
from tripmail.delivery.envelopes import prepare_envelopes
from tripmail.delivery.journal import DatabaseJournal
from tripmail.delivery.retries import RetryPolicy
from tripmail.delivery.smtp import Outcome, SendingLoop, SendResult
from tripmail.delivery.suppressions import suppress_pending
from tripmail.metrics import delivery_metrics
from tripmail.queue import ByLane

log = logging.getLogger(__name__)


def _log_result(result: SendResult, claim: Claim) -> None:
    # The SMTP reply is the server's; the message's content never goes to the log.
    log.info(
        "message %d %s: %s",
        result.key,
        result.outcome,
        result.reply,
        extra={
            "workspace_id": claim.workspace_id,
            "event_id": claim.event_id,
            "message_id": result.key,
            "outcome": result.outcome.value,
            "smtp_code": result.code,
            "attempt": claim.attempts,
        },
    )


@dataclass(frozen=True)
class DeliveryReport:
    sent: int
    failed: int
    unknown: int
    retry_ids: list[int]


def deliver_messages(
    sessions: sessionmaker[Session],
    message_ids: list[int],
    *,
    run_id: str,
    sending: SendingLoop,
    deadline: float,
    retries: RetryPolicy,
    public_url: str,
    clock: Callable[[], datetime],
    settled: bool = False,
    record_for: float | None = None,
    bounce_domain: str | None = None,
) -> DeliveryReport:
    """Claim and render, commit, then for each message: commit its hand-over, send it, record its result.

    `run_id` names this delivery across its retries and redeliveries (the Celery task id), so a later try
    can settle what an earlier one that died left claimed; `settled` when the caller did that already in this
    run (process_events did). Sending stops after `deadline` seconds; results that could not be written because
    the database was away are tried again until `record_for` seconds (from the call) have passed.
    """
    started = time.monotonic()
    # Rendered before the claim, outside the write: on SQLite a write transaction holds the one write lock, and
    # rendering a batch takes far longer than claiming it.
    with sessions() as session:
        rendered = prepare_envelopes(
            session, message_ids, now=clock(), public_url=public_url, bounce_domain=bounce_domain
        )
    with sessions.begin() as session:
        if not settled:
            settle_unfinished(session, run_id=run_id, now=clock())
            # A settled run's messages were planned by it just now, against the suppressions of now.
            suppress_pending(session, message_ids, now=clock())
        claimed = claim_messages(session, message_ids, run_id=run_id, now=clock())
        prepared = rendered.claimed(claimed)
        store_message_id_headers(session, prepared.message_id_headers)
    if not claimed:
        return DeliveryReport(sent=0, failed=0, unknown=0, retry_ids=[])
    journal = DatabaseJournal(sessions, claimed, clock=clock, retries=retries)

    async def send_recorded() -> list[SendResult]:
        for failure in prepared.failures:
            journal.record(failure)
        results = list(prepared.failures)
        if prepared.envelopes:
            results += await sending.relays.send_all(prepared.envelopes, deadline=deadline, journal=journal)
        await journal.flush(until=started + (record_for if record_for is not None else deadline))
        return results

    results = sending.run(send_recorded())
    released = []
    if len(results) < len(claimed):
        # The deadline stopped the sending: settle the messages it left without a result.
        with sessions.begin() as session:
            released = settle_unfinished(session, run_id=run_id, now=clock())
    for result in results:
        delivery_metrics().delivered.labels(result.outcome).inc()
        _log_result(result, claimed[result.key])
    delivery_metrics().retries.inc(len(journal.retry_ids))
    sent = sum(1 for result in results if result.outcome is Outcome.SENT)
    unknown = sum(1 for result in results if result.outcome is Outcome.UNKNOWN)
    failed = len(results) - sent - unknown - len(journal.retry_ids)
    return DeliveryReport(sent=sent, failed=failed, unknown=unknown, retry_ids=journal.retry_ids + released)


# Hands a full batch of message ids, and whether its lane is the transactional one, to a delivery task.
Publish = Callable[[list[int], bool], None]


@dataclass(frozen=True)
class Deadlines:
    """How long a task that delivers a batch sends, and how long it keeps trying to record the results, in seconds
    from the start of the delivery."""

    send_s: float
    record_s: float

    @classmethod
    def of(cls, time_limit_s: float, *, elapsed_s: float) -> "Deadlines":
        """For a task with a hard time limit of `time_limit_s` that spent `elapsed_s` before it delivers."""
        # Stop sending well inside the hard time limit, so the results so far are recorded, not killed; while the
        # database is away, keep trying to record them almost until that limit.
        return cls(send_s=max(1.0, time_limit_s * 0.8 - elapsed_s), record_s=max(1.0, time_limit_s * 0.9 - elapsed_s))


class InlineRemainder:
    """Full batches of messages go to delivery tasks in their lane, for other processes to send in parallel; the
    rest (all of it, for a few one-contact events) is kept for the task that planned it to send, which saves a task
    and a wait in the queue per event."""

    def __init__(self, *, batch_size: int, publish: Publish) -> None:
        self._batch_size = batch_size
        self._publish = publish
        self.rest: list[int] = []

    def enqueue(self, planned: ByLane) -> None:
        """Publish each lane's ids when they fill a batch, else keep them."""
        for transactional, message_ids in planned.lanes():
            if len(message_ids) >= self._batch_size:
                self._publish(message_ids, transactional)
            else:
                self.rest.extend(message_ids)


def deliver_batch(
    sessions: sessionmaker[Session],
    message_ids: list[int],
    *,
    run_id: str,
    sending: Callable[[], SendingLoop],
    settings: Settings,
    clock: Callable[[], datetime],
    elapsed_s: float = 0.0,
    settled: bool = False,
) -> DeliveryReport:
    """deliver_messages within the time limit of a task that spent `elapsed_s` before it, under the retry policy
    of `settings`; the batch's tally goes to the log.

    `sending` gives the process's sending loop: it is called, and so the loop built, only when there is something
    to send (in deliver_planned and deliver_after too)."""
    deadlines = Deadlines.of(settings.task_time_limit_s, elapsed_s=elapsed_s)
    report = deliver_messages(
        sessions,
        message_ids,
        run_id=run_id,
        sending=sending(),
        deadline=deadlines.send_s,
        record_for=deadlines.record_s,
        retries=RetryPolicy.of(settings),
        public_url=settings.public_url,
        clock=clock,
        settled=settled,
        bounce_domain=settings.bounce_domain,
    )
    log.info(
        "delivered batch: %d sent, %d failed, %d unknown, %d waiting to be tried again",
        report.sent,
        report.failed,
        report.unknown,
        len(report.retry_ids),
    )
    return report


def deliver_planned(
    sessions: sessionmaker[Session],
    plan: Callable[[Callable[[ByLane], None]], None],
    *,
    run_id: str,
    sending: Callable[[], SendingLoop],
    settings: Settings,
    publish: Publish,
    clock: Callable[[], datetime],
) -> None:
    """Run `plan`, which hands the messages it plans to the enqueue it is given: full batches are published
    (InlineRemainder), the rest is sent here once it returns. `plan` settles what earlier tries of `run_id` left
    claimed (ingest's process_events does), so the rest is delivered as settled."""
    started = time.monotonic()
    remainder = InlineRemainder(batch_size=settings.send_batch_size, publish=publish)
    plan(remainder.enqueue)
    if remainder.rest:
        deliver_batch(
            sessions,
            remainder.rest,
            run_id=run_id,
            sending=sending,
            settings=settings,
            clock=clock,
            elapsed_s=time.monotonic() - started,
            settled=True,
        )


def deliver_after(
    sessions: sessionmaker[Session],
    plan: Callable[[], list[int]],
    *,
    run_id: str,
    sending: Callable[[], SendingLoop],
    settings: Settings,
    clock: Callable[[], datetime],
) -> None:
    """Run `plan` and send every message it returns here, within what is left of the task's time limit."""
    started = time.monotonic()
    message_ids = plan()
    if message_ids:
        deliver_batch(
            sessions,
            message_ids,
            run_id=run_id,
            sending=sending,
            settings=settings,
            clock=clock,
            elapsed_s=time.monotonic() - started,
        )
