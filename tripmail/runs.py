"""Automation runs: the program of an automation with more than send_email steps, for one contact and one event.

A run is carried out in the transaction that records its event: conditions choose a branch, update_contact steps
change the contact, and the send_email steps it reaches become messages planned with the event's own. What it
did is kept on its row (`trail`), and a step it cannot carry out ends it as failed with the reason, sending
nothing after that step.
"""

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from tripmail.automations import SendStep, Started, Step
from tripmail.conditions import ConditionError, evaluate
from tripmail.delivery import EventColumns, contact_context, event_context
from tripmail.fields import coerce_field_value
from tripmail.models import Contact, RunStatus
from tripmail.rendering import RenderError, render_part, template_context


class StepFailed(Exception):
    """A step that cannot be carried out for this contact and event; the message says why."""


@dataclass(frozen=True)
class CarriedOut:
    """A run's row values, and the automation as planning sees it: only the send_email steps the run reached."""

    row: dict[str, Any]
    sends: Started


def carry_out(
    automation: Started,
    *,
    contact: Contact,
    event: EventColumns,
    workspace_id: int,
    data: dict[str, Any],
    field_types: Mapping[str, str],
    now: datetime,
) -> CarriedOut:
    """Carry the automation's program out from its first step to its end, or to the step that fails."""
    program = automation.program
    trail: list[dict[str, Any]] = []
    reached: list[SendStep] = []
    position: int | None = 0 if program else None
    status, error = RunStatus.COMPLETED, None
    while position is not None:
        step = program[position]
        try:
            following, done = _step(step, contact=contact, event=event, data=data, field_types=field_types, now=now)
        except StepFailed as exc:
            status, error = RunStatus.FAILED, f"step {position} ({step.kind}): {exc}"
            trail.append({"position": position, "kind": step.kind, "failed": str(exc)})
            break
        trail.append({"position": position, "kind": step.kind, **done})
        if step.kind == "send_email":
            reached.append(SendStep(step.id, step.config["template_id"]))
        position = following
    row = {
        "workspace_id": workspace_id,
        "event_id": event.id,
        "automation_id": automation.id,
        "contact_id": contact.id,
        "status": status,
        "position": position,
        "trail": trail,
        "error": error,
        "created_at": now,
        "updated_at": now,
    }
    return CarriedOut(row, replace(automation, send_steps=tuple(reached), program=()))


def _step(
    step: Step,
    *,
    contact: Contact,
    event: EventColumns,
    data: dict[str, Any],
    field_types: Mapping[str, str],
    now: datetime,
) -> tuple[int | None, dict[str, Any]]:
    """Carry one step out: the position that follows, and what it did."""
    config = step.config
    if step.kind == "send_email":
        return config["next"], {"template": config["template"]}
    if step.kind == "condition":
        try:
            holds = evaluate(config["if"], data=data, contact=contact_context(contact), event=event_context(event))
        except ConditionError as exc:
            raise StepFailed(str(exc)) from exc
        branch = "then" if holds else "else"
        return config[branch], {"branch": branch}
    if step.kind == "update_contact":
        values = {
            name: _field_value(name, value, contact=contact, event=event, data=data, field_types=field_types)
            for name, value in config["set"].items()
        }
        if any(contact.fields.get(name) != value for name, value in values.items()):
            contact.fields = {**contact.fields, **values}
            contact.updated_at = now
        return config["next"], {"set": sorted(values)}
    raise StepFailed(f"no step kind {step.kind!r} in this version of Tripmail")


def _field_value(
    name: str,
    value: Any,
    *,
    contact: Contact,
    event: EventColumns,
    data: dict[str, Any],
    field_types: Mapping[str, str],
) -> Any:
    """A literal as it is; text with `{{ ... }}` rendered for this event and contact; typed as the field is."""
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        context = template_context(contact_context(contact), data, event_context(event))
        try:
            value = render_part(value, context, html=False)
        except RenderError as exc:
            raise StepFailed(f"field {name}: {exc}") from exc
    field_type = field_types.get(name)
    if field_type is None:
        return value
    try:
        return coerce_field_value(field_type, value)
    except ValueError as exc:
        raise StepFailed(f"field {name} ({field_type}): {exc}") from exc
