"""Planning: which contacts an event's automations mail, and the pending messages that stand for those mails.

Apart from delivery proper: planning runs in the transaction that records an event or carries a run on,
long before (and in another task than) the messages are claimed and sent.
"""

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from tripmail.automations.program import Started, messages_by_lane, transactional_steps
from tripmail.contacts.identity import normalize_email
from tripmail.db import insert_new
from tripmail.delivery.suppressions import suppressed_addresses
from tripmail.models import Message, MessageStatus
from tripmail.queue import ByLane
from tripmail.schemas.trigger import ChannelFilter
from tripmail.webhooks.delivery_events import announce_by_workspace, event_type_of


class Recipient(Protocol):
    """What planning a message reads of a contact: a Contact, or just these columns of one."""

    @property
    def id(self) -> str: ...
    @property
    def email(self) -> str | None: ...
    @property
    def consents(self) -> dict[str, Any]: ...


def recipient(contact: Recipient, channel_filter: ChannelFilter | None) -> str | None:
    """The address to mail, or None when the trigger's subscription filter rules the contact out.

    A filter naming another email, a phone or a push subscription names no email subscription of this contact:
    `not_strict` then allows the contact's own email ("another fitting subscription"), strict skips the contact.
    """
    if contact.email is None:
        return None
    if channel_filter is None or channel_filter.not_strict:
        return contact.email
    named = channel_filter.email
    return contact.email if named is not None and normalize_email(named) == contact.email else None


def plan_messages(
    session: Session,
    workspace_id: int,
    event_id: str,
    contacts: Sequence[Recipient],
    automations: list[Started],
    channel_filter: ChannelFilter | None = None,
    *,
    now: datetime,
    suppressed: set[str] | None = None,
) -> ByLane:
    """One pending message per send_email step of each automation that may mail each contact; their new ids.

    One statement per lane; a message that exists already (a chunk planned twice) is skipped by its key.
    `suppressed` may bring the workspace's suppressed addresses among these contacts, looked up already.
    """
    if suppressed is None:
        addresses = {recipient(contact, channel_filter) for contact in contacts}
        suppressed = suppressed_addresses(session, workspace_id, {address for address in addresses if address})
    rows = message_rows(workspace_id, event_id, contacts, automations, channel_filter, now=now, suppressed=suppressed)
    return add_messages(session, rows, transactional_steps=transactional_steps(automations))


def message_rows(
    workspace_id: int,
    event_id: str,
    contacts: Sequence[Recipient],
    automations: list[Started],
    channel_filter: ChannelFilter | None,
    *,
    now: datetime,
    suppressed: set[str],
) -> list[dict[str, Any]]:
    """The rows plan_messages inserts, for callers that insert the messages of several events at once.

    `suppressed`: the workspace's suppressed addresses (among these contacts' at least).
    """
    rows = []
    for contact in contacts:
        address = recipient(contact, channel_filter)
        if address is None:
            continue
        refused_marketing = contact.consents.get("email") is False
        for automation in automations:
            # Hard bounces stay suppressed for transactional mail too: mailing a dead address only hurts the sender.
            rows += [
                {
                    "workspace_id": workspace_id,
                    "event_id": event_id,
                    "automation_id": automation.id,
                    "step_id": step.id,
                    "contact_id": contact.id,
                    "template_id": step.template_id,
                    "to_address": address,
                    "status": MessageStatus.SUPPRESSED if address in suppressed else MessageStatus.PENDING,
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                }
                for step in automation.send_steps
                if automation.transactional or step.transactional or not refused_marketing
            ]
    return rows


def add_messages(session: Session, rows: list[dict[str, Any]], *, transactional_steps: Collection[int]) -> ByLane:
    """Insert message_rows, a statement per lane, skipping those whose key exists; the ids of the new pending ones,
    by lane. `transactional_steps`: those of the rows' steps whose mail is transactional (see transactional_steps)."""
    transactional = [row for row in rows if row["step_id"] in transactional_steps]
    bulk = [row for row in rows if row["step_id"] not in transactional_steps]
    return ByLane(_insert_messages(session, transactional), _insert_messages(session, bulk))


def _insert_messages(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert rows in one statement, skipping those whose key exists; the ids of the new pending ones. The new
    suppressed ones are announced (delivery_events) as of their creation."""
    inserted = insert_new(session, Message, rows, ["event_id", "automation_id", "step_id", "contact_id"], "id")
    if all(row["status"] is MessageStatus.PENDING for row in rows):
        return inserted
    added = session.execute(
        select(Message.id, Message.workspace_id, Message.status, Message.created_at).where(Message.id.in_(inserted))
    ).all()
    suppressed = [(key, workspace_id) for key, workspace_id, status, _ in added if status == MessageStatus.SUPPRESSED]
    if suppressed:
        now = added[0].created_at
        announce_by_workspace(session, suppressed, event_type_of(MessageStatus.SUPPRESSED), now=now)
    return [key for key, _, status, _ in added if status == MessageStatus.PENDING]


def pending_message_ids(session: Session, event_id: str) -> ByLane:
    """The ids of an event's messages still pending, by lane: what a redelivered task hands on again."""
    return messages_by_lane(session, (Message.event_id == event_id) & (Message.status == MessageStatus.PENDING))
