"""The journal: each message's hand-over and SMTP result written down as the sending goes on, many to a
transaction; apart from the claims because it runs beside the SMTP connections, on the sending loop.
"""

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime

from sqlalchemy import Connection, bindparam, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from tripmail.db import engine_of
from tripmail.delivery.claims import ADD_ATTEMPT, Claim
from tripmail.delivery.retries import RetryPolicy
from tripmail.delivery.smtp import JournalUnavailable, Outcome, SendResult
from tripmail.delivery.suppressions import suppress
from tripmail.faults import is_transient
from tripmail.models import Message, MessageStatus, table_of
from tripmail.webhooks.delivery_events import announce, event_type_of

log = logging.getLogger(__name__)


_MESSAGES = table_of(Message)


# By id, a row per parameter set, rather than `id IN (...)`: a hand-over is mostly one message, and expanding
# the IN list is a large share of its transaction.
_HAND_OVER = update(_MESSAGES).where(_MESSAGES.c.id == bindparam("message")).values(handed_over_at=bindparam("at"))


_SET_OUTCOME = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id == bindparam("message"))
    .values(
        status=bindparam("new_status"),
        smtp_code=bindparam("code"),
        smtp_reply=bindparam("reply"),
        sent_at=bindparam("sent"),
        relay=bindparam("relay"),
        next_attempt_at=bindparam("next_attempt"),
        give_up_at=bindparam("give_up"),
        enqueued_at=None,
        updated_at=bindparam("now"),
    )
)


def record_progress(
    connection: Connection,
    *,
    handed_over: list[int],
    withdrawn: list[int],
    results: list[SendResult],
    claims: Mapping[int, Claim],
    now: datetime,
    retries: RetryPolicy,
) -> list[int]:
    """Write down hand-overs, hand-overs that did not happen after all, and results; the ids to try again later.

    A Connection rather than a Session: a message's journal is a transaction of its own, and a Session costs
    as much again as the statements (bench/results.md, What the code's shape rests on).
    """
    if handed_over:
        connection.execute(_HAND_OVER, [{"message": key, "at": now} for key in handed_over])
    if withdrawn:
        connection.execute(_HAND_OVER, [{"message": key, "at": None} for key in withdrawn])
    return record_results(connection, results, claims, now=now, retries=retries)


def record_results(
    connection: Connection,
    results: list[SendResult],
    claims: Mapping[int, Claim],
    *,
    now: datetime,
    retries: RetryPolicy,
) -> list[int]:
    """Mark each claimed message by its outcome, announcing the sent, failed and unknown ones (delivery_events);
    return the ids that failed transiently and wait for their next try (the scheduler hands them out when it is
    due)."""
    if not results:
        return []
    retry = []
    outcomes = []
    ended: dict[tuple[int, MessageStatus], list[int]] = {}
    for result in results:
        claim = claims[result.key]
        reply = result.reply
        next_attempt = None
        give_up_at = claim.give_up_at
        if result.outcome is Outcome.SENT:
            status = MessageStatus.SENT
        elif result.outcome is Outcome.UNKNOWN:
            status = MessageStatus.UNKNOWN
        elif result.outcome is Outcome.TRANSIENT:
            give_up_at = give_up_at or retries.give_up_at(now)
            next_attempt = retries.next_attempt(failures=claim.attempts, give_up_at=give_up_at, now=now)
            if next_attempt is not None:
                status = MessageStatus.PENDING
                retry.append(result.key)
            else:
                status = MessageStatus.FAILED
                reply = (
                    f"gave up after {claim.attempts} attempt(s), still failing at {now:%Y-%m-%d %H:%M:%S} UTC: {reply}"
                )
        else:
            status = MessageStatus.FAILED
            if result.refuses_recipient:
                suppress(connection, claim.workspace_id, claim.to_address, f"{result.stage}: {result.reply}", now=now)
        if status is not MessageStatus.PENDING:
            ended.setdefault((claim.workspace_id, status), []).append(result.key)
        outcomes.append(
            {
                "message": result.key,
                "new_status": status,
                "code": result.code,
                "reply": reply,
                "sent": now if status is MessageStatus.SENT else None,
                "relay": result.relay,
                "next_attempt": next_attempt,
                "give_up": give_up_at,
                "now": now,
            }
        )
    connection.execute(_SET_OUTCOME, outcomes)
    for (workspace_id, status), message_ids in ended.items():
        announce(connection, workspace_id, message_ids, event_type_of(status), now=now)
    connection.execute(
        ADD_ATTEMPT,
        [
            {
                "message_id": result.key,
                "attempted_at": now,
                "outcome": result.outcome,
                "relay": result.relay,
                "smtp_code": result.code,
                "smtp_reply": result.reply,
            }
            for result in results
        ],
    )
    return retry


# How long a result waits for a hand-over's transaction to ride in before it is written on its own.
RESULTS_WAIT_S = 0.02
# How many results a hand-over's transaction waits for before it takes them: a row more in a statement costs
# far less than the statement (bench/results.md, What the code's shape rests on).
RESULTS_TOGETHER = 4


class DatabaseJournal:
    """Writes each message's progress as it happens, many messages to one transaction (a group commit).

    A hand-over is waited for, because it must be committed before the message goes out. Results are not: they
    are written with a hand-over once RESULTS_TOGETHER of them wait, or RESULTS_WAIT_S after the first came
    (and at flush), in the order they came. Writing each as it comes would cost a transaction per result, a large
    share of a batch's CPU. Until it is written, a worker that dies leaves the message `unknown`, as one that dies
    while its message is with the server does: the wait keeps that window short.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        claims: Mapping[int, Claim],
        *,
        clock: Callable[[], datetime],
        retries: RetryPolicy,
    ) -> None:
        self._engine = engine_of(sessions)
        self._claims = claims
        self._clock = clock
        self._retries = retries
        self._handovers: list[tuple[int, asyncio.Future[None]]] = []
        self._withdrawn: list[int] = []
        self._results: list[SendResult] = []
        self._writer: asyncio.Task[None] | None = None
        self._results_timer: asyncio.TimerHandle | None = None
        self._failure: SQLAlchemyError | None = None
        self.retry_ids: list[int] = []

    async def handing_over(self, key: int) -> None:
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._handovers.append((key, written))
        self._wake()
        await written

    def record(self, result: SendResult) -> None:
        self._results.append(result)
        self._write_results_soon()

    def _write_results_soon(self) -> None:
        if self._results_timer is None:
            self._results_timer = asyncio.get_running_loop().call_later(RESULTS_WAIT_S, self._write_results)

    def _write_results(self) -> None:
        self._results_timer = None
        if (self._results or self._withdrawn) and not self._wake(results_too=True):
            self._write_results_soon()  # the write under way takes hand-overs only: look again after it

    async def flush(self, *, until: float | None = None) -> None:
        """Wait until everything is written; raise the database's error if it cannot be.

        While the database is unreachable (or SQLite's write lock stays taken: tripmail.faults), the writing is tried
        again until `until` (time.monotonic()); any other error is raised at once, as it would come back on every
        try. The results are the server's replies: once this run is gone they are lost, and a message handed over
        without its result written is left `unknown` by the next try (never sent twice, but an operator must look):
        waiting out a PostgreSQL restart of a few seconds keeps delivery from leaving its messages so.
        """
        if self._results_timer is not None:
            self._results_timer.cancel()
            self._results_timer = None
        if self._writer is not None:
            await self._writer
        pause = 0.1
        while self._results or self._withdrawn:
            self._failure = None
            await self._write_all(results_too=True)
            if self._failure is None or not is_transient(self._failure):
                break
            if until is None or time.monotonic() + pause > until:
                break
            log.warning(
                "could not record the results of %d message(s), trying again in %.1f s: %s",
                len(self._results),
                pause,
                self._failure,
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
        if self._failure is not None:
            raise self._failure

    def _wake(self, *, results_too: bool = False) -> bool:
        """Start a writer unless one is under way; whether it started one."""
        if self._writer is not None and not self._writer.done():
            return False
        self._writer = asyncio.get_running_loop().create_task(self._write_all(results_too=results_too))
        return True

    async def _write_all(self, *, results_too: bool = False) -> None:
        # Results (and withdrawn hand-overs) alone wait for the next hand-over, or for flush.
        while self._handovers or (results_too and (self._results or self._withdrawn)):
            handovers, self._handovers = self._handovers, []
            results: list[SendResult] = []
            withdrawn: list[int] = []
            if results_too or len(self._results) >= RESULTS_TOGETHER:
                results, self._results = self._results, []
                withdrawn, self._withdrawn = self._withdrawn, []
            # A sender stopped by the deadline while it waited has nothing to write down.
            waiting = [(key, written) for key, written in handovers if not written.done()]
            try:
                retry = await asyncio.to_thread(self._write, [key for key, _ in waiting], withdrawn, results)
            except SQLAlchemyError as exc:
                self._failure = exc
                for _, written in waiting:
                    if not written.done():
                        written.set_exception(JournalUnavailable(f"{type(exc).__name__}: {exc}"))
                self._results[:0] = results
                self._withdrawn[:0] = withdrawn
                return
            self.retry_ids += retry
            for key, written in waiting:
                if written.cancelled():
                    self._withdrawn.append(key)  # written down, but its sender was stopped before DATA
                else:
                    written.set_result(None)

    def _write(self, handed_over: list[int], withdrawn: list[int], results: list[SendResult]) -> list[int]:
        with self._engine.begin() as connection:
            return record_progress(
                connection,
                handed_over=handed_over,
                withdrawn=withdrawn,
                results=results,
                claims=self._claims,
                now=self._clock(),
                retries=self._retries,
            )
