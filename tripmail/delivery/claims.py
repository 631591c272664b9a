"""Claims: a message is only sent by the task run that moved it from pending to sending.

Claim, commit, send, mark: a redelivered task cannot send a message again. Before its DATA goes out, each
message's hand-over is committed; a run that dies therefore leaves two kinds of claimed message behind, which
the next try of the same task tells apart: not handed over (sent again) and handed over without a recorded reply
(marked unknown, never sent again, because the server may have it).
"""

from collections.abc import Collection
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import bindparam, insert, or_, select, update
from sqlalchemy.orm import Session

from tripmail.delivery.smtp import Outcome
from tripmail.models import Message, MessageAttempt, MessageStatus, table_of
from tripmail.webhooks.delivery_events import announce_by_workspace, event_type_of

# Why a claimed message ended as unknown when its run stopped between hand-over and reply.
STOPPED_AFTER_HAND_OVER = (
    "delivery stopped after handing the message to the SMTP server and before its reply was recorded; "
    "the server may have accepted it, so it is not sent again"
)


# The statements a delivery runs for every batch are built once: on SQLite, building an ORM statement takes longer
# than running it (bench/results.md, What the code's shape rests on), and a one-message batch runs several.
_MESSAGES = table_of(Message)
_ATTEMPTS = table_of(MessageAttempt)

_CLAIM = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id.in_(bindparam("ids", expanding=True)), _MESSAGES.c.status == MessageStatus.PENDING)
    .values(
        status=MessageStatus.SENDING,
        attempts=_MESSAGES.c.attempts + 1,
        claimed_by=bindparam("run"),
        handed_over_at=None,
        updated_at=bindparam("now"),
    )
    .returning(
        _MESSAGES.c.id,
        _MESSAGES.c.attempts,
        _MESSAGES.c.workspace_id,
        _MESSAGES.c.to_address,
        _MESSAGES.c.event_id,
        _MESSAGES.c.give_up_at,
    )
)

_LEFT_CLAIMED = select(_MESSAGES.c.id, _MESSAGES.c.handed_over_at, _MESSAGES.c.workspace_id).where(
    _MESSAGES.c.claimed_by == bindparam("run"), _MESSAGES.c.status == MessageStatus.SENDING
)

# Due at once: the scheduler hands them out again unless the run that settles them sends them first.
_RELEASE = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=MessageStatus.PENDING,
        attempts=_MESSAGES.c.attempts - 1,
        next_attempt_at=bindparam("now"),
        enqueued_at=None,
        updated_at=bindparam("now"),
    )
)

_MARK_UNKNOWN = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=MessageStatus.UNKNOWN, smtp_code=None, smtp_reply=STOPPED_AFTER_HAND_OVER, updated_at=bindparam("now")
    )
)


ADD_ATTEMPT = insert(_ATTEMPTS)

_SET_MESSAGE_ID = (
    update(_MESSAGES).where(_MESSAGES.c.id == bindparam("message")).values(message_id_header=bindparam("header"))
)


class Claim(NamedTuple):
    """What recording the result of a claimed message needs of it, returned by the claim rather than read again."""

    attempts: int  # this one counted
    workspace_id: int
    to_address: str
    event_id: str
    give_up_at: datetime | None  # set by the first transient failure


def claim_messages(session: Session, message_ids: list[int], *, run_id: str, now: datetime) -> dict[int, Claim]:
    """Move pending messages to sending for one run; only the messages returned here (by id, in id order) may be
    sent by that run."""
    if not message_ids:
        return {}
    rows = session.execute(_CLAIM, {"ids": message_ids, "run": run_id, "now": now})
    return {message_id: Claim(*claim) for message_id, *claim in sorted(rows)}


def settle_unfinished(session: Session, *, run_id: str, now: datetime) -> list[int]:
    """Close the claims a run left open: not handed over -> pending again; handed over -> unknown.

    Run before a run claims (an earlier try of the same task may have died mid-send) and after it sent (its
    deadline may have stopped it). Returns the ids made pending again.
    """
    left = session.execute(_LEFT_CLAIMED, {"run": run_id}).all()
    if not left:
        return []
    # The claim counted an attempt that never reached the server: it is given back with the claim.
    released = sorted(message_id for message_id, handed_over_at, _ in left if handed_over_at is None)
    handed_over = sorted((message_id, workspace) for message_id, at, workspace in left if at is not None)
    unknown = [message_id for message_id, _ in handed_over]
    if released:
        session.execute(_RELEASE, {"ids": released, "now": now})
    if unknown:
        session.execute(_MARK_UNKNOWN, {"ids": unknown, "now": now})
        announce_by_workspace(session, handed_over, event_type_of(MessageStatus.UNKNOWN), now=now)
        session.execute(
            ADD_ATTEMPT,
            [
                {
                    "message_id": message_id,
                    "attempted_at": now,
                    "outcome": Outcome.UNKNOWN,
                    "smtp_code": None,
                    "smtp_reply": STOPPED_AFTER_HAND_OVER,
                }
                for message_id in unknown
            ],
        )
    return released


def give_up_run(
    session: Session,
    *,
    run_id: str,
    reason: str,
    now: datetime,
    message_ids: Collection[int] = (),
    event_ids: Collection[str] = (),
) -> None:
    """Fail, with `reason`, the messages a task run would have sent that no other run holds: those it claimed and did
    not hand over, and the pending ones among `message_ids` or of `event_ids`. Those it handed over become unknown,
    as settle_unfinished leaves them. For a task that is not run again (its process died under it too often)."""
    released = settle_unfinished(session, run_id=run_id, now=now)
    ids = [*released, *message_ids]
    whose = [_MESSAGES.c.id.in_(ids)] if ids else []
    if event_ids:
        whose.append(_MESSAGES.c.event_id.in_(list(event_ids)))
    if not whose:
        return
    failed = session.execute(
        update(_MESSAGES)
        .where(_MESSAGES.c.status == MessageStatus.PENDING, or_(*whose))
        .values(status=MessageStatus.FAILED, smtp_code=None, smtp_reply=reason, next_attempt_at=None, updated_at=now)
        .returning(_MESSAGES.c.id, _MESSAGES.c.workspace_id)
    )
    announce_by_workspace(
        session, [(key, workspace) for key, workspace in failed], event_type_of(MessageStatus.FAILED), now=now
    )


def store_message_id_headers(session: Session, headers: dict[int, str]) -> None:
    """Store each claimed message's Message-ID header (by message id) with its claim."""
    if headers:
        session.execute(_SET_MESSAGE_ID, [{"message": key, "header": header} for key, header in headers.items()])
