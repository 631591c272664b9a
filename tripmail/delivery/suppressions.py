"""The suppression list as an operator sees it: list, add and lift the addresses a workspace no longer mails.

A permanent SMTP refusal adds an address while its message fails (suppress, below), and planning a message reads
the list (suppressed_addresses): an address lifted here is mailed again from the next event on. Apart from the
rest of delivery because bounce reports and the api reach the list too, and neither loads the SMTP client.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic.networks import validate_email
from pydantic_core import PydanticCustomError
from sqlalchemy import Connection, Exists, bindparam, delete, select, update
from sqlalchemy.orm import Session

from tripmail.contacts.identity import normalize_email
from tripmail.db import insert_if_absent, insert_new
from tripmail.errors import FieldError, InvalidRequest, NotFound
from tripmail.models import Message, MessageStatus, Suppression, SuppressionSource, Workspace, table_of
from tripmail.schemas.suppressions import SuppressionPage, SuppressionView
from tripmail.webhooks.delivery_events import announce_by_workspace, event_type_of

_MESSAGES = table_of(Message)
_SUPPRESSIONS = table_of(Suppression)

# In a statement over messages: the message's address is on its workspace's suppression list.
ADDRESS_SUPPRESSED: Exists = (
    select(_SUPPRESSIONS.c.id)
    .where(_SUPPRESSIONS.c.workspace_id == _MESSAGES.c.workspace_id, _SUPPRESSIONS.c.email == _MESSAGES.c.to_address)
    .exists()
)


# A message planned before its address was suppressed (one waiting for its next try, for a run's wait, or in a
# long fan-out) is not sent after all.
_SUPPRESS_PENDING = (
    update(_MESSAGES)
    .where(
        _MESSAGES.c.id.in_(bindparam("ids", expanding=True)),
        _MESSAGES.c.status == MessageStatus.PENDING,
        ADDRESS_SUPPRESSED,
    )
    .values(status=MessageStatus.SUPPRESSED, next_attempt_at=None, updated_at=bindparam("now"))
    .returning(_MESSAGES.c.id, _MESSAGES.c.workspace_id)
)


def suppression_address(email: str) -> str:
    """The address as messages are addressed: checked as an event's contact email is, then normalised."""
    try:
        return normalize_email(validate_email(email)[1])
    except PydanticCustomError as exc:
        reason = (exc.context or {}).get("reason", exc.message())
        message = f"{email!r} is not a valid email address: {reason}"
        raise InvalidRequest.listing([FieldError(field="email", message=message)]) from exc


def suppression_view(row: Suppression) -> SuppressionView:
    """An entry as the api and the CLI show it."""
    return SuppressionView(email=row.email, source=row.source, reason=row.reason, created_at=row.created_at)


def list_suppressions(
    session: Session, workspace_id: int, *, email: str | None = None, after: int | None = None, limit: int = 100
) -> SuppressionPage:
    """Oldest first, `limit` to a page; `after` (the previous page's next_after) pages on; `email` looks one up.

    Oldest first, so a page that was full stays the same while addresses bounce: a new entry lands after it.
    """
    query = select(Suppression).where(Suppression.workspace_id == workspace_id)
    if email is not None:
        query = query.where(Suppression.email == suppression_address(email))
    if after is not None:
        query = query.where(Suppression.id > after)
    rows = session.scalars(query.order_by(Suppression.id).limit(limit + 1)).all()
    page = rows[:limit]
    return SuppressionPage(
        items=[suppression_view(row) for row in page], next_after=page[-1].id if len(rows) > limit else None
    )


def recent_suppressions(
    session: Session, *, workspace_id: int | None = None, limit: int = 100
) -> list[tuple[SuppressionView, str]]:
    """Newest first, each with its workspace's key; of one workspace when an id is given."""
    query = select(Suppression, Workspace.key).join(Workspace, Workspace.id == Suppression.workspace_id)
    if workspace_id is not None:
        query = query.where(Suppression.workspace_id == workspace_id)
    rows = session.execute(query.order_by(Suppression.id.desc()).limit(limit)).all()
    return [(suppression_view(row), key) for row, key in rows]


@dataclass(frozen=True)
class Added:
    suppression: SuppressionView
    # False when the address was suppressed already: its entry stays as it was (source, reason, time).
    created: bool


def add_suppressions(
    session: Session, workspace_id: int, emails: Sequence[str], *, reason: str, now: datetime
) -> list[Added]:
    """Suppress these addresses by an operator's decision, each once, in the order given.

    Every address is checked before any is added, so an invalid one (InvalidRequest names it) adds none.
    """
    addresses = list(dict.fromkeys(suppression_address(email) for email in emails))
    rows = [
        {
            "workspace_id": workspace_id,
            "email": address,
            "reason": reason,
            "source": SuppressionSource.MANUAL,
            "created_at": now,
        }
        for address in addresses
    ]
    # An address suppressed already keeps its entry, also one a bounce records at this same moment.
    created = set(insert_new(session, Suppression, rows, ["workspace_id", "email"], "email"))
    stored = {
        row.email: row
        for row in session.scalars(
            select(Suppression).where(Suppression.workspace_id == workspace_id, Suppression.email.in_(addresses))
        )
    }
    return [Added(suppression_view(stored[address]), address in created) for address in addresses]


def remove_suppressions(session: Session, workspace_id: int, emails: Sequence[str]) -> dict[str, bool]:
    """Lift these addresses' suppressions; each normalised address, and whether it was suppressed until now.

    Every address is checked before any is lifted, so an invalid one (InvalidRequest names it) lifts none.
    """
    addresses = list(dict.fromkeys(suppression_address(email) for email in emails))
    removed = set(
        session.scalars(
            delete(Suppression)
            .where(Suppression.workspace_id == workspace_id, Suppression.email.in_(addresses))
            .returning(Suppression.email),
            execution_options={"synchronize_session": False},
        )
    )
    return {address: address in removed for address in addresses}


def remove_suppression(session: Session, workspace_id: int, email: str) -> None:
    """Lift one address's suppression; NotFound when the workspace does not suppress it."""
    [(address, removed)] = remove_suppressions(session, workspace_id, [email]).items()
    if not removed:
        raise NotFound(f"{address} is not suppressed in this workspace", field="email")


_SUPPRESSED = select(_SUPPRESSIONS.c.email).where(
    _SUPPRESSIONS.c.workspace_id == bindparam("ws"), _SUPPRESSIONS.c.email.in_(bindparam("emails", expanding=True))
)


def suppress(
    session: Session | Connection,
    workspace_id: int,
    email: str,
    reason: str,
    *,
    now: datetime,
    source: SuppressionSource = SuppressionSource.SMTP,
) -> None:
    """Stop mailing an address: refused for good as a recipient (no such mailbox or domain), bounced later, or
    complained about; `source` says which."""
    values = {"workspace_id": workspace_id, "email": email, "reason": reason, "source": source, "created_at": now}
    insert_if_absent(session, Suppression, values, ["workspace_id", "email"])


def suppressed_addresses(session: Session, workspace_id: int, addresses: set[str]) -> set[str]:
    """Those of `addresses` on the workspace's suppression list."""
    if not addresses:
        return set()
    return set(session.scalars(_SUPPRESSED, {"ws": workspace_id, "emails": list(addresses)}))


def suppress_pending(session: Session, message_ids: list[int], *, now: datetime) -> None:
    """Mark suppressed, and announce so, those of these pending messages whose address is suppressed now."""
    suppressed = [
        (key, workspace) for key, workspace in session.execute(_SUPPRESS_PENDING, {"ids": message_ids, "now": now})
    ]
    announce_by_workspace(session, suppressed, event_type_of(MessageStatus.SUPPRESSED), now=now)
