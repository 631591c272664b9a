"""Fan-out: what an event plans for its audience, the runs of its workflow automations per contact, and an
audience of many planned a page of recipients at a time."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.orm import Session

from tripmail.automations import runs
from tripmail.automations.program import Started, automations_for, transactional_steps
from tripmail.contacts.audience import (
    CHUNK,
    compile_query,
    contacts_page,
    custom_field_query,
    field_types,
    recipients_page,
)
from tripmail.contacts.fields import apply_field_options
from tripmail.contacts.store import update_contact
from tripmail.db import insert_new
from tripmail.delivery.planning import Recipient, add_messages, message_rows, plan_messages, recipient
from tripmail.delivery.suppressions import suppressed_addresses
from tripmail.models import AutomationRun, Contact, Event, EventStatus
from tripmail.queue import ByLane
from tripmail.rendering.context import EventColumns
from tripmail.schemas.trigger import TriggerRequest


def carry_out_runs(
    automations: list[Started],
    contact: Contact,
    event: EventColumns,
    trigger: TriggerRequest,
    field_types: dict[str, str],
    *,
    now: datetime,
) -> tuple[list[dict[str, Any]], list[Started], list[dict[str, Any]]]:
    """Carry out the runs of the workflow automations for the contact; their rows, the automations with the
    send_email steps to plan for the contact (all of them for the others, those each run reached for its own),
    and the webhook deliveries the runs made."""
    rows: list[dict[str, Any]] = []
    planned: list[Started] = []
    webhooks: list[dict[str, Any]] = []
    for automation in automations:
        if not automation.is_workflow:
            planned.append(automation)
            continue
        carried = runs.carry_out(
            automation,
            contact=contact,
            event=event,
            workspace_id=trigger.workspace_id,
            data=trigger.data,
            custom_data=trigger.hooks,
            field_types=field_types,
            now=now,
        )
        rows.append(carried.row)
        planned.append(carried.sends)
        webhooks += carried.webhooks
    return rows, planned, webhooks


def fan_out_chunk(session: Session, event_id: str, *, now: datetime) -> tuple[ByLane, bool]:
    """Plan the next chunk of a fanning-out event's audience; the new message ids, and whether it is done."""
    event = session.get(Event, event_id)
    if event is None or event.status != EventStatus.FANNING_OUT:
        return ByLane(), True
    trigger = TriggerRequest.read_back(event.request)
    condition = audience_condition(session, trigger)
    after = event.fanout_cursor or ""
    automations = automations_for(session, trigger)
    contacts: Sequence[Recipient]
    if _changes_contacts(trigger) or any(automation.is_workflow for automation in automations):
        loaded = contacts_page(session, trigger.workspace_id, condition, after=after, limit=CHUNK)
        if _changes_contacts(trigger):
            for contact in loaded:
                update_contact(contact, trigger.audience, trigger.contact_update, now=now)
                apply_field_options(contact, trigger.fields, now=now)
        planned = _fan_out_runs(session, event, trigger, loaded, automations, now=now)
        contacts = loaded
    else:
        contacts = recipients_page(session, trigger.workspace_id, condition, after=after, limit=CHUNK)
        planned = plan_messages(
            session, event.workspace_id, event.id, contacts, automations, trigger.channel_filter, now=now
        )
    if contacts:
        event.contact_id = event.contact_id or contacts[0].id
        event.fanout_cursor = contacts[-1].id
    if len(contacts) < CHUNK:
        event.status = EventStatus.PROCESSED
        event.processed_at = now
    return planned, event.status == EventStatus.PROCESSED


def _fan_out_runs(
    session: Session,
    event: Event,
    trigger: TriggerRequest,
    contacts: Sequence[Contact],
    automations: list[Started],
    *,
    now: datetime,
) -> ByLane:
    """plan_messages for a chunk when automations have runs: each contact's runs choose its messages. A chunk
    planned again (a redelivered task) finds its runs and messages there and adds none."""
    seen = runs.EventSeen(event.id, event.name, event.key, event.received_at)
    types = field_types(session, event.workspace_id)
    addresses = {recipient(contact, trigger.channel_filter) for contact in contacts}
    suppressed = suppressed_addresses(session, event.workspace_id, {a for a in addresses if a})
    run_rows: list[dict[str, Any]] = []
    webhooks: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for contact in contacts:
        rows, planned, made = carry_out_runs(automations, contact, seen, trigger, types, now=now)
        run_rows += rows
        webhooks += made
        messages += message_rows(
            event.workspace_id, event.id, [contact], planned, trigger.channel_filter, now=now, suppressed=suppressed
        )
    insert_new(session, AutomationRun, run_rows, ["event_id", "automation_id", "contact_id"], "id")
    runs.add_webhooks(session, webhooks)
    return add_messages(session, messages, transactional_steps=transactional_steps(automations))


def _changes_contacts(trigger: TriggerRequest) -> bool:
    update = trigger.contact_update
    return bool(update.fields) or update.email_consent is not None or any(f.option.stores for f in trigger.fields)


def audience_condition(session: Session, trigger: TriggerRequest) -> ColumnElement[bool]:
    audience = trigger.audience
    if audience.query is not None:
        return compile_query(session, trigger.workspace_id, audience.query)
    assert audience.custom_field is not None, "only audiences of many fan out"
    types = field_types(session, trigger.workspace_id)
    query = custom_field_query(types, audience.custom_field.name, audience.custom_field.value)
    return compile_query(session, trigger.workspace_id, query)
