"""Claims on messages: what a delivery run that stopped half-way leaves behind, and how the next try settles it."""

import asyncio
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import workspace_with_messages
from tripmail.config import Settings
from tripmail.db import engine_of, make_sessionmaker
from tripmail.delivery.claims import STOPPED_AFTER_HAND_OVER, claim_messages, give_up_run, settle_unfinished
from tripmail.delivery.journal import DatabaseJournal, record_progress
from tripmail.delivery.retries import RetryPolicy, due_messages, mark_handed_out
from tripmail.delivery.smtp import Outcome, SendResult
from tripmail.models import Message, MessageAttempt
from tripmail.queue import HAND_OUT_AGAIN_AFTER

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RETRIES = RetryPolicy(
    waits=(timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15)), give_up_after=timedelta(hours=1)
)


def three_messages(sessions: sessionmaker[Session]) -> list[int]:
    return workspace_with_messages(sessions, "acme", ["a@example.com", "b@example.com", "c@example.com"], now=NOW)[1]


def states(sessions: sessionmaker[Session], ids: list[int]) -> list[tuple[str, int, str | None]]:
    with sessions() as session:
        rows = session.scalars(select(Message).where(Message.id.in_(ids)).order_by(Message.id))
        return [(row.status, row.attempts, row.claimed_by) for row in rows]


def test_a_stopped_run_is_settled_by_its_next_try(sessions: sessionmaker[Session]) -> None:
    sent, handed_over, not_started = ids = three_messages(sessions)
    with sessions.begin() as session:
        claims = claim_messages(session, ids, run_id="run-1", now=NOW)
        assert list(claims) == ids
        assert [(claim.attempts, claim.to_address) for claim in claims.values()] == [
            (1, "a@example.com"),
            (1, "b@example.com"),
            (1, "c@example.com"),
        ]
        record_progress(
            session.connection(),
            handed_over=[sent, handed_over],
            withdrawn=[],
            results=[SendResult(sent, Outcome.SENT, 250, "250 queued")],
            claims=claims,
            now=NOW,
            retries=RETRIES,
        )
    # The run dies here. A claim by another task takes nothing that run-1 holds.
    with sessions.begin() as session:
        assert claim_messages(session, ids, run_id="run-2", now=NOW) == {}
        assert settle_unfinished(session, run_id="run-2", now=NOW) == []

    with sessions.begin() as session:
        assert settle_unfinished(session, run_id="run-1", now=NOW) == [not_started]
        assert list(claim_messages(session, ids, run_id="run-1", now=NOW)) == [not_started]

    assert states(sessions, ids) == [("sent", 1, "run-1"), ("unknown", 1, "run-1"), ("sending", 1, "run-1")]
    with sessions() as session:
        attempts = session.scalars(select(MessageAttempt).where(MessageAttempt.message_id == handed_over)).all()
    assert [(attempt.outcome, attempt.smtp_reply) for attempt in attempts] == [("unknown", STOPPED_AFTER_HAND_OVER)]


def test_a_withdrawn_hand_over_is_sent_again(sessions: sessionmaker[Session]) -> None:
    ids = three_messages(sessions)
    with sessions.begin() as session:
        claims = claim_messages(session, ids, run_id="run-1", now=NOW)
        record_progress(
            session.connection(), handed_over=ids[:1], withdrawn=[], results=[], claims=claims, now=NOW, retries=RETRIES
        )
    with sessions.begin() as session:
        # The deadline stopped the sender before its DATA: the hand-over was written, then taken back.
        record_progress(
            session.connection(), handed_over=[], withdrawn=ids[:1], results=[], claims=claims, now=NOW, retries=RETRIES
        )
        assert settle_unfinished(session, run_id="run-1", now=NOW) == ids
    assert states(sessions, ids) == [("pending", 0, "run-1")] * 3


def message_row(sessions: sessionmaker[Session], message_id: int) -> Message:
    with sessions() as session:
        return session.get_one(Message, message_id)


def next_attempt(sessions: sessionmaker[Session], message_id: int) -> datetime:
    due = message_row(sessions, message_id).next_attempt_at
    assert due is not None
    return due


def fail_transiently(
    sessions: sessionmaker[Session], message_ids: list[int], *, now: datetime, retries: RetryPolicy = RETRIES
) -> list[int]:
    with sessions.begin() as session:
        claims = claim_messages(session, message_ids, run_id="run-1", now=now)
        return record_progress(
            session.connection(),
            claims=claims,
            handed_over=[],
            withdrawn=[],
            results=[SendResult(key, Outcome.TRANSIENT, 451, "451 4.3.0 later") for key in claims],
            now=now,
            retries=retries,
        )


def test_a_transient_failure_waits_in_the_database_by_the_schedule_until_it_gives_up(
    sessions: sessionmaker[Session],
) -> None:
    first, second, _ = three_messages(sessions)
    assert fail_transiently(sessions, [first, second], now=NOW) == [first, second]
    row = message_row(sessions, first)
    assert (row.status, row.attempts, row.give_up_at) == ("pending", 1, NOW + timedelta(hours=1))
    # The first wait, stretched by up to a tenth so the messages of one outage come back spread out.
    assert NOW + timedelta(minutes=1) <= next_attempt(sessions, first) <= NOW + timedelta(minutes=1, seconds=6)
    with sessions() as session:
        assert due_messages(session, now=NOW + timedelta(seconds=59), limit=10).ids == []
        assert sorted(due_messages(session, now=NOW + timedelta(minutes=2), limit=10).ids) == [first, second]

    later = NOW + timedelta(minutes=2)
    assert fail_transiently(sessions, [first], now=later) == [first]
    row = message_row(sessions, first)
    assert row.give_up_at == NOW + timedelta(hours=1), "the end of the tries is counted from the first failure"
    assert later + timedelta(minutes=5) <= next_attempt(sessions, first) <= later + timedelta(minutes=5, seconds=30)

    # The waits repeat the last one; the last try is made at the give-up time itself.
    near_the_end = NOW + timedelta(minutes=50)
    assert fail_transiently(sessions, [first], now=near_the_end) == [first]
    assert message_row(sessions, first).next_attempt_at == NOW + timedelta(hours=1)

    assert fail_transiently(sessions, [first], now=NOW + timedelta(hours=1)) == []
    row = message_row(sessions, first)
    assert (row.status, row.attempts, row.next_attempt_at) == ("failed", 4, None)
    assert row.smtp_reply is not None
    assert row.smtp_reply.startswith("gave up after 4 attempt(s)") and row.smtp_reply.endswith("451 4.3.0 later")
    with sessions() as session:
        outcomes = session.scalars(select(MessageAttempt.outcome).where(MessageAttempt.message_id == first)).all()
    assert outcomes == ["transient"] * 4


def test_the_scheduler_hands_a_due_message_out_once_until_it_is_stale(sessions: sessionmaker[Session]) -> None:
    first, second, _ = three_messages(sessions)
    fail_transiently(sessions, [first, second], now=NOW)
    due_at = NOW + timedelta(minutes=2)
    with sessions.begin() as session:
        mark_handed_out(session, [first], now=due_at)
    with sessions() as session:
        assert due_messages(session, now=due_at, limit=10).ids == [second]
        stale = due_at + HAND_OUT_AGAIN_AFTER + timedelta(seconds=1)
        assert sorted(due_messages(session, now=stale, limit=10).ids) == [first, second]
    # A claim takes it out of the due ones; a transient failure after it makes it due again, however recent the
    # hand-out was.
    assert fail_transiently(sessions, [first], now=due_at) == [first]
    with sessions() as session:
        assert sorted(due_messages(session, now=due_at + timedelta(minutes=6), limit=10).ids) == [first, second]
        assert len(due_messages(session, now=due_at + timedelta(minutes=6), limit=1).ids) == 1


def test_the_journal_writes_each_result_soon_and_all_of_them_at_flush(
    sessions: sessionmaker[Session],
) -> None:
    """In the order they came: a result soon, even with no hand-over to ride with, and all of them once flushed."""
    first, second, third = ids = three_messages(sessions)
    with sessions.begin() as session:
        claims = claim_messages(session, ids, run_id="run-1", now=NOW)
    journal = DatabaseJournal(sessions, claims, clock=lambda: NOW, retries=RETRIES)

    async def send_three() -> list[list[tuple[str, int, str | None]]]:
        seen = []
        await journal.handing_over(first)
        journal.record(SendResult(first, Outcome.SENT, 250, "250 queued"))
        # No hand-over follows (the server is slow to take the next message): the result is written anyway.
        for _ in range(500):
            if states(sessions, ids)[0][0] == "sent":
                break
            await asyncio.sleep(0.01)
        seen.append(states(sessions, ids))
        await journal.handing_over(second)
        journal.record(SendResult(second, Outcome.TRANSIENT, 421, "421 try later"))
        journal.record(SendResult(third, Outcome.PERMANENT, None, "template reset: bad"))
        await journal.flush()
        seen.append(states(sessions, ids))
        return seen

    alone, flushed = asyncio.run(send_three())
    assert [status for status, _, _ in alone] == ["sent", "sending", "sending"]
    assert [status for status, _, _ in flushed] == ["sent", "pending", "failed"]
    assert journal.retry_ids == [second]
    with sessions() as session:
        handed_over = dict(session.execute(select(Message.id, Message.handed_over_at).where(Message.id.in_(ids))).all())
    assert (handed_over[first], handed_over[second], handed_over[third]) == (NOW, NOW, None)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_journal_keeps_results_the_database_cannot_take_until_it_can(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    """Another process holds SQLite's write lock past the journal's wait: the replies are kept and written once
    it lets go, rather than lost with the run (its next try would leave the messages unknown)."""
    first, second, _ = ids = three_messages(sessions)
    with sessions.begin() as session:
        claims = claim_messages(session, [first, second], run_id="run-1", now=NOW)
    impatient = make_sessionmaker(settings.model_copy(update={"sqlite_lock_wait_s": 0.05}))
    journal = DatabaseJournal(impatient, claims, clock=lambda: NOW, retries=RETRIES)
    other = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), isolation_level=None)

    async def send_two() -> None:
        await journal.handing_over(first)
        await journal.handing_over(second)
        other.execute("BEGIN EXCLUSIVE")
        journal.record(SendResult(first, Outcome.SENT, 250, "250 queued"))
        journal.record(SendResult(second, Outcome.SENT, 250, "250 queued"))
        with pytest.raises(OperationalError, match="database is locked"):
            await journal.flush(until=time.monotonic())  # no time to wait: the error, the results kept
        asyncio.get_running_loop().call_later(0.3, other.execute, "ROLLBACK")
        await journal.flush(until=time.monotonic() + 30)

    asyncio.run(send_two())
    other.close()
    assert states(sessions, ids) == [("sent", 1, "run-1"), ("sent", 1, "run-1"), ("pending", 0, None)]
    impatient.kw["bind"].dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_journal_does_not_retry_a_database_error_that_would_come_back_on_every_try(
    sessions: sessionmaker[Session], settings: Settings, tmp_path: Path
) -> None:
    """An OperationalError that is not transient (tripmail.faults; here a database without the messages table)
    is raised at the first try: trying again could only fail again. The message stays claimed, to be settled as
    unknown rather than sent twice."""
    first, _, _ = ids = three_messages(sessions)
    with sessions.begin() as session:
        claims = claim_messages(session, [first], run_id="run-1", now=NOW)
    elsewhere = make_sessionmaker(settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'empty.db'}"}))
    writes = []
    event.listen(engine_of(elsewhere), "begin", lambda _: writes.append(1))
    journal = DatabaseJournal(elsewhere, claims, clock=lambda: NOW, retries=RETRIES)

    async def send_one() -> None:
        journal.record(SendResult(first, Outcome.SENT, 250, "250 queued"))
        with pytest.raises(OperationalError, match="no such table"):
            await journal.flush(until=time.monotonic() + 5)

    asyncio.run(send_one())
    elsewhere.kw["bind"].dispose()
    assert len(writes) == 1
    assert states(sessions, ids)[0] == ("sending", 1, "run-1")


def test_a_hand_out_marked_after_a_worker_tried_the_message_again_does_not_hold_its_next_try_back(
    sessions: sessionmaker[Session],
) -> None:
    first, _, _ = three_messages(sessions)
    seconds_apart = RetryPolicy(waits=(timedelta(seconds=2),), give_up_after=timedelta(hours=1))
    fail_transiently(sessions, [first], now=NOW, retries=seconds_apart)
    due_at = next_attempt(sessions, first)
    # Published; a worker claims it and fails it again before the scheduler's transaction marks it handed out.
    fail_transiently(sessions, [first], now=due_at, retries=seconds_apart)
    with sessions.begin() as session:
        mark_handed_out(session, [first], now=due_at)
    with sessions() as session:
        assert due_messages(session, now=next_attempt(sessions, first), limit=10).ids == [first]


def test_a_run_given_up_fails_its_messages_and_leaves_the_others(sessions: sessionmaker[Session]) -> None:
    ids = workspace_with_messages(sessions, "acme", [f"{name}@example.com" for name in "abcdef"], now=NOW)[1]
    sent, handed_over, claimed, pending, others, _not_in_the_batch = ids
    with sessions.begin() as session:
        claims = claim_messages(session, [sent, handed_over, claimed], run_id="run-1", now=NOW)
        claim_messages(session, [others], run_id="run-2", now=NOW)
        record_progress(
            session.connection(),
            handed_over=[sent, handed_over],
            withdrawn=[],
            results=[SendResult(sent, Outcome.SENT, 250, "250 queued")],
            claims=claims,
            now=NOW,
            retries=RETRIES,
        )
    # Its process died twice: the task's next run gives up on the batch it was given.
    with sessions.begin() as session:
        give_up_run(
            session,
            run_id="run-1",
            reason="lost twice",
            now=NOW,
            message_ids=[sent, handed_over, claimed, pending, others],
        )

    with sessions() as session:
        rows = session.execute(
            select(Message.status, Message.smtp_reply).where(Message.id.in_(ids)).order_by(Message.id)
        )
    assert [tuple(row) for row in rows] == [
        ("sent", "250 queued"),
        ("unknown", STOPPED_AFTER_HAND_OVER),
        ("failed", "lost twice"),
        ("failed", "lost twice"),
        ("sending", None),  # another run's
        ("pending", None),  # not in the batch
    ]
