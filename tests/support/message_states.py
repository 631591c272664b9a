"""What became of the messages a test caused, read from the database: the conditions tests wait on and the states
they check."""

from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tripmail.models import Event, Message, MessageAttempt, Suppression, Workspace


def message_of_event_settled(db: sessionmaker[Session], event_id: str) -> Message | None:
    """The event's one message once it is neither pending nor being sent; None until then."""
    with db() as session:
        message = session.scalars(select(Message).where(Message.event_id == event_id)).one_or_none()
    return message if message is not None and message.status not in ("pending", "sending") else None


def attempts(db: sessionmaker[Session], message_id: int) -> list[tuple[str, int | None]]:
    with db() as session:
        rows = session.scalars(
            select(MessageAttempt).where(MessageAttempt.message_id == message_id).order_by(MessageAttempt.id)
        )
        return [(row.outcome, row.smtp_code) for row in rows]


def statuses(db: sessionmaker[Session], workspace: str, of: type[Message | Event] = Message) -> dict[str, int]:
    """How many of the workspace's messages (or events) have each status."""
    with db() as session:
        rows = session.execute(
            select(of.status, func.count())
            .join(Workspace, of.workspace_id == Workspace.id)
            .where(Workspace.key == workspace)
            .group_by(of.status)
        )
        return {str(status): int(count) for status, count in rows}


def workspace_messages_settled(db: sessionmaker[Session], workspace: str, expected: int) -> dict[str, int] | None:
    """The message statuses once all `expected` messages exist and none is pending or being sent."""
    counts = statuses(db, workspace)
    done = sum(counts.values()) == expected and not counts.keys() & {"pending", "sending"}
    return counts if done else None


class State(NamedTuple):
    status: str
    reply: str | None
    attempts: list[str]
    suppressions: list[tuple[str, str]]


def state(sessions: sessionmaker[Session], message_id: int) -> State:
    with sessions() as session:
        message = session.get_one(Message, message_id)
        attempts = session.scalars(
            select(MessageAttempt.outcome).where(MessageAttempt.message_id == message_id).order_by(MessageAttempt.id)
        )
        suppressions = session.execute(
            select(Suppression.email, Suppression.source)
            .where(Suppression.workspace_id == message.workspace_id)
            .order_by(Suppression.id)
        )
        return State(
            message.status, message.smtp_reply, list(attempts), [(email, source) for email, source in suppressions]
        )


def message_state(db: sessionmaker[Session], message_id: int) -> tuple[str, list[str], list[tuple[str, str]]]:
    """The message's status, its attempts' outcomes and its workspace's suppressions (address, source)."""
    found = state(db, message_id)
    return found.status, found.attempts, found.suppressions
