"""Messages that failed transiently (a 4xx, a relay that is down or slow): when each is tried again, and when not.

The due time lives on the message row, not in a delayed Celery task: a wait of an hour in Redis outlives the
visibility timeout and comes back again and again, and a relay outage of minutes must not end a message's tries.
`tripmail scheduler` hands due messages to the workers, as it hands out runs whose wait is over. Real MTAs keep
trying for days (Postfix 5 days); the default here is about 1 minute, 5 minutes, 15 minutes, 1 hour, then hourly
up to 3 days after the first failure, then `failed`.
"""

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.orm import Session

from tripmail.automations.program import lanes_of_messages, split_by_lane
from tripmail.config import Settings
from tripmail.delivery.suppressions import ADDRESS_SUPPRESSED
from tripmail.models import Message, MessageStatus, table_of
from tripmail.queue import HAND_OUT_AGAIN_AFTER, ByLane

# Each wait is stretched by up to this share at random, so the messages one outage failed together come back
# spread out rather than all in the same second.
JITTER = 0.1


@dataclass(frozen=True)
class RetryPolicy:
    """The waits after the first, second, ... transient failure (the last one repeats), and when tries end."""

    waits: tuple[timedelta, ...]
    give_up_after: timedelta

    @classmethod
    def of(cls, settings: Settings) -> "RetryPolicy":
        return cls(
            tuple(timedelta(seconds=wait) for wait in settings.send_retry_waits_s),
            timedelta(seconds=settings.send_give_up_after),
        )

    def give_up_at(self, first_failure: datetime) -> datetime:
        return first_failure + self.give_up_after

    def next_attempt(self, *, failures: int, give_up_at: datetime, now: datetime) -> datetime | None:
        """When to try again after the `failures`-th transient failure; None once `give_up_at` has come.

        The last try is made at `give_up_at` itself, so a relay back just before it still gets the message.
        """
        if now >= give_up_at:
            return None
        wait = self.waits[min(max(failures, 1), len(self.waits)) - 1]
        stretched = wait * (1 + random.uniform(0, JITTER))  # noqa: S311 - spreading load, not security
        return min(now + stretched, give_up_at)


_MESSAGES = table_of(Message)

_DUE = (
    lanes_of_messages(
        and_(
            _MESSAGES.c.status == MessageStatus.PENDING,
            _MESSAGES.c.next_attempt_at <= bindparam("now"),
            _MESSAGES.c.enqueued_at.is_(None) | (_MESSAGES.c.enqueued_at < bindparam("stale")),
        )
    )
    .order_by(_MESSAGES.c.next_attempt_at)
    .limit(bindparam("limit"))
)

# Only the messages still due and unclaimed: one a worker took, and perhaps failed again with a new due time, before
# this mark landed must not be held back by it.
_HANDED_OUT = (
    update(_MESSAGES)
    .where(
        _MESSAGES.c.id.in_(bindparam("ids", expanding=True)),
        _MESSAGES.c.status == MessageStatus.PENDING,
        _MESSAGES.c.next_attempt_at <= bindparam("now"),
    )
    .values(enqueued_at=bindparam("now"))
)


def due_messages(session: Session, *, now: datetime, limit: int) -> ByLane:
    """Pending messages whose next try has come, not handed out lately (a hand-out whose task was lost with a
    worker or with Redis is made again after HAND_OUT_AGAIN_AFTER; a second one is harmless, as only one claim
    takes a message), by lane."""
    return split_by_lane(session.execute(_DUE, {"now": now, "stale": now - HAND_OUT_AGAIN_AFTER, "limit": limit}))


def mark_handed_out(session: Session, message_ids: list[int], *, now: datetime) -> None:
    if message_ids:
        session.execute(_HANDED_OUT, {"ids": message_ids, "now": now})


# What an operator may send again: a message of unknown fate (once the relay's logs show it did not go out) and one
# that failed. Never one that was sent.
RESENDABLE = (MessageStatus.UNKNOWN, MessageStatus.FAILED)


@dataclass(frozen=True)
class Resent:
    """The messages made pending again, and the ones left as they are, by why."""

    queued: list[int]
    not_resendable: list[int]
    suppressed: list[int]


def resendable_ids(
    session: Session, *, status: str, since: datetime | None = None, workspace_id: int | None = None
) -> list[int]:
    """The messages in `status` (unknown or failed), last changed at or after `since`, in one workspace or all."""
    query = select(Message.id).where(Message.status == status).order_by(Message.id)
    if since is not None:
        query = query.where(Message.updated_at >= since)
    if workspace_id is not None:
        query = query.where(Message.workspace_id == workspace_id)
    return list(session.scalars(query))


def resend_messages(session: Session, message_ids: list[int], *, now: datetime) -> Resent:
    """Make unknown and failed messages pending again, with a fresh series of tries, by an operator's decision.

    They are due at once and marked handed out: the caller publishes them, and should that publish be lost the
    scheduler hands them out again. A message to an address the workspace suppresses stays as it is.
    """
    resendable = set(
        session.scalars(select(Message.id).where(Message.id.in_(message_ids), Message.status.in_(RESENDABLE)))
    )
    suppressed = set(session.scalars(select(Message.id).where(Message.id.in_(resendable), ADDRESS_SUPPRESSED)))
    queued = sorted(
        session.scalars(
            update(Message)
            .where(Message.id.in_(resendable - suppressed), Message.status.in_(RESENDABLE))
            .values(
                status=MessageStatus.PENDING,
                claimed_by=None,
                handed_over_at=None,
                next_attempt_at=now,
                give_up_at=None,
                enqueued_at=now,
                updated_at=now,
            )
            .returning(Message.id)
        )
    )
    return Resent(
        queued=queued,
        not_resendable=sorted(set(message_ids) - resendable),
        suppressed=sorted(suppressed),
    )
