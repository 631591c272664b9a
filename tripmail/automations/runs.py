"""Automation runs: the program of an automation with more than send_email steps, for one contact and one event.

A run is carried out in the transaction that records its event: conditions choose a branch, update_contact steps
change the contact, and the send_email steps it reaches become messages planned with the event's own. What it
did is kept on its row (`trail`), and a step it cannot carry out ends it as failed with the reason, sending
nothing after that step.

A wait step stops it as `waiting` with its wake time in the database (never as a delayed Celery task: Redis
would hand such a task out again after the visibility timeout). The scheduler (worker/schedule.py) hands due
runs to a worker, which carries each on in one transaction that first moves it out of `waiting`: a second
hand-over of the same run finds it moved and does nothing, so a wait fires once.
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import and_, bindparam, select, update
from sqlalchemy.orm import Session

from tripmail.automations.program import Started, started_automation
from tripmail.automations.steps import Running, SendStep, StepFailed, kind_of
from tripmail.contacts.audience import field_types
from tripmail.db import insert_new
from tripmail.delivery.planning import plan_messages
from tripmail.models import (
    Automation,
    AutomationRun,
    Contact,
    Event,
    Message,
    MessageStatus,
    RunStatus,
    WebhookDelivery,
    table_of,
)
from tripmail.queue import HAND_OUT_AGAIN_AFTER, ByLane
from tripmail.rendering.context import EventColumns
from tripmail.schemas.trigger import TriggerRequest


class EventSeen(NamedTuple):
    """The event as conditions and update_contact steps see it."""

    id: str
    name: str
    key: str | None
    received_at: datetime


@dataclass(frozen=True)
class CarriedOut:
    """A run's row values, the automation as planning sees it (only the send_email steps the run reached), and the
    rows of the webhook deliveries it made."""

    row: dict[str, Any]
    sends: Started
    webhooks: list[dict[str, Any]]


def carry_out(
    automation: Started,
    *,
    contact: Contact,
    event: EventColumns,
    workspace_id: int,
    data: dict[str, Any],
    custom_data: dict[str, Any],
    field_types: Mapping[str, str],
    now: datetime,
    start: int | None = 0,
) -> CarriedOut:
    """Carry the automation's program out from `start` to its end, to a wait not yet due, or to the step that
    fails."""
    program = automation.program
    running = Running(
        automation,
        contact,
        event,
        workspace_id,
        data,
        custom_data,
        field_types,
        now,
    )
    trail: list[dict[str, Any]] = []
    reached: list[SendStep] = []
    position = start if program else None
    status, error, wake_at = RunStatus.COMPLETED, None, None
    while position is not None:
        step = program[position]
        try:
            kind = kind_of(step)
            done = kind.carry_out(step, running)
        except StepFailed as exc:
            status, error = RunStatus.FAILED, f"step {position} ({step.kind}): {exc}"
            trail.append({"position": position, "kind": step.kind, "failed": str(exc)})
            break
        trail.append({"position": position, "kind": step.kind, **done.did})
        if kind.sends:
            reached.append(SendStep.of(step))
        position, wake_at = done.following, done.wake_at
        if wake_at is not None and wake_at > now:
            status = RunStatus.WAITING
            break
        wake_at = None
    row = {
        "workspace_id": workspace_id,
        "event_id": event.id,
        "automation_id": automation.id,
        "contact_id": contact.id,
        "status": status,
        "position": position,
        "trail": trail,
        "error": error,
        "wake_at": wake_at,
        "enqueued_at": None,
        "created_at": now,
        "updated_at": now,
    }
    return CarriedOut(row, replace(automation, send_steps=tuple(reached), program=()), running.webhooks)


_RUNS = table_of(AutomationRun)
_AUTOMATIONS = table_of(Automation)

# With its automation's flag: a transactional automation's runs go to the fast lane (whether a step ahead of the
# run mails transactionally would take reading its program).
_DUE = (
    select(_RUNS.c.id, _AUTOMATIONS.c.transactional)
    .join(_AUTOMATIONS, _AUTOMATIONS.c.id == _RUNS.c.automation_id)
    .where(
        _RUNS.c.status == RunStatus.WAITING,
        _RUNS.c.wake_at <= bindparam("now"),
        _AUTOMATIONS.c.status == "active",
        (_RUNS.c.enqueued_at.is_(None)) | (_RUNS.c.enqueued_at < bindparam("stale")),
    )
    .order_by(_RUNS.c.wake_at)
    .limit(bindparam("limit"))
)

# Only the runs still due: one a worker carried on to its next wait before this mark landed must not be held back.
_HANDED_OUT = (
    update(_RUNS)
    .where(
        _RUNS.c.id.in_(bindparam("ids", expanding=True)),
        _RUNS.c.status == RunStatus.WAITING,
        _RUNS.c.wake_at <= bindparam("now"),
    )
    .values(enqueued_at=bindparam("now"))
)

# Moves a due run out of `waiting`: the one transaction that does so carries it on.
_TAKE = (
    update(_RUNS)
    .where(_RUNS.c.id == bindparam("run"), _RUNS.c.status == RunStatus.WAITING, _RUNS.c.wake_at <= bindparam("now"))
    .values(status=RunStatus.RUNNING, updated_at=bindparam("now"))
    .returning(_RUNS.c.id)
)


def due_runs(session: Session, *, now: datetime, limit: int) -> ByLane:
    """Waiting runs of active automations whose time has come, not handed out lately, by lane."""
    return ByLane.split(session.execute(_DUE, {"now": now, "stale": now - HAND_OUT_AGAIN_AFTER, "limit": limit}))


def mark_handed_out(session: Session, run_ids: list[int], *, now: datetime) -> None:
    if run_ids:
        session.execute(_HANDED_OUT, {"ids": run_ids, "now": now})


def carry_on(session: Session, run_id: int, *, now: datetime) -> list[int]:
    """Carry a due run on from its wait; the ids of its messages still to send (also those an earlier try of
    this planned and did not send: the run is then no longer waiting, but its messages are pending)."""
    run = session.get(AutomationRun, run_id)
    if run is None:
        return []
    automation = started_automation(session, run.workspace_id, run.automation_id)
    if automation is None or not automation.is_workflow:
        # Paused (or made a plain automation) since: the run waits on, and the scheduler hands it out again
        # once its automation is active.
        run.enqueued_at = None
    elif session.scalars(_TAKE, {"run": run_id, "now": now}).first() is not None:
        _carry_on(session, run, automation, now=now)
    return list(
        session.scalars(
            select(Message.id).where(
                and_(
                    Message.event_id == run.event_id,
                    Message.automation_id == run.automation_id,
                    Message.contact_id == run.contact_id,
                    Message.status == MessageStatus.PENDING,
                )
            )
        )
    )


def _carry_on(session: Session, run: AutomationRun, automation: Started, *, now: datetime) -> None:
    event = session.get_one(Event, run.event_id)
    contact = session.get_one(Contact, run.contact_id)
    trigger = TriggerRequest.read_back(event.request)
    carried = carry_out(
        automation,
        contact=contact,
        event=EventSeen(event.id, event.name, event.key, event.received_at),
        workspace_id=run.workspace_id,
        data=trigger.data,
        custom_data=trigger.hooks,
        field_types=field_types(session, run.workspace_id),
        now=now,
        start=run.position,
    )
    row = carried.row
    run.status, run.position, run.error, run.wake_at = row["status"], row["position"], row["error"], row["wake_at"]
    run.trail = [*run.trail, *row["trail"]]
    run.enqueued_at = None
    run.updated_at = now
    # Its messages are read back by carry_on, with those an earlier try of it planned.
    plan_messages(session, run.workspace_id, event.id, [contact], [carried.sends], trigger.channel_filter, now=now)
    add_webhooks(session, carried.webhooks)


def add_webhooks(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert webhook delivery rows, skipping those a run carried out again made already."""
    insert_new(session, WebhookDelivery, rows, ["event_id", "step_id", "contact_id"], "id")
