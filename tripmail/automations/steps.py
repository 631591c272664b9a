"""The step kinds of an automation's program, one entry each in KINDS: how the apply file gives it (its model), how
that is checked and compiled to the config stored on its row, how a run carries it out, and whether it sends mail.

Applying a file (tripmail/setup/apply.py), planning (tripmail/automations/program.py) and runs
(tripmail/automations/runs.py) go through KINDS alone, so a new kind is a new entry here with its code.
"""

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import UnionType
from typing import TYPE_CHECKING, Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from tripmail.automations.conditions import ConditionError, check_condition, evaluate
from tripmail.contacts.fields import coerce_field_value
from tripmail.durations import parse_duration
from tripmail.errors import InvalidConfig
from tripmail.models import Contact, Template, WebhookStatus
from tripmail.rendering.context import EventColumns, contact_context, event_context
from tripmail.rendering.templates import RenderError, render_part, template_context

if TYPE_CHECKING:
    from tripmail.automations.program import Started


class SpecModel(BaseModel):
    """A part of the apply file: a key it does not know is an error, not ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SendEmailStep(SpecModel):
    template: str
    # esputnik's "Send obligatory (transactional) email": this step mails without marketing consent and without
    # unsubscribe headers, in an automation that otherwise is marketing.
    transactional: bool = False


class ConditionStep(SpecModel):
    """`if` (see tripmail.automations.conditions) chooses `then` or `else`; either may be empty, and both go on
    after."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    if_: str = Field(alias="if", min_length=1, max_length=2000)
    then: list["StepSpec"] = Field(default_factory=list)
    else_: list["StepSpec"] = Field(default_factory=list, alias="else")


class WaitUntil(SpecModel):
    """Wait until the time the event's data gives (ISO 8601, or seconds since the epoch)."""

    until: str = Field(pattern=r"^data(\.[A-Za-z_][A-Za-z0-9_]*)+$", description="e.g. data.delivery_at")


class UpdateContactStep(SpecModel):
    """Contact fields to set: a literal, or text with `{{ data.x }}` / `{{ contact.x }}` rendered for the event."""

    set: dict[str, JsonValue] = Field(min_length=1)


class WebhookStep(SpecModel):
    """POST the event, the contact and the trigger's `custom_data` as JSON, signed with `secret` (HMAC-SHA256)."""

    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)
    secret: str | None = Field(default=None, min_length=16, max_length=200)


class StepSpec(SpecModel):
    """One step: exactly one of its kinds. A field per entry of KINDS, in its order."""

    send_email: SendEmailStep | None = None
    wait: int | str | WaitUntil | None = Field(default=None, description="a duration (2d, 90m) or {until: data.x}")
    condition: ConditionStep | None = None
    update_contact: UpdateContactStep | None = None
    webhook: WebhookStep | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "StepSpec":
        given = [name for name in KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a step is exactly one of {', '.join(KINDS)}; got {', '.join(given) or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in KINDS if getattr(self, name) is not None)

    @property
    def value(self) -> Any:
        """What the file gives for its kind."""
        return getattr(self, self.kind)


@dataclass(frozen=True)
class Step:
    """One position of an automation's program (see compile_program)."""

    id: int
    kind: str
    config: dict[str, Any]


@dataclass(frozen=True)
class SendStep:
    id: int
    template_id: int
    # The step mails as transactional mail even when its automation is not.
    transactional: bool = False

    @classmethod
    def of(cls, step: Step) -> "SendStep":
        return cls(step.id, step.config["template_id"], step.config.get("transactional", False))


class StepFailed(Exception):
    """A step that cannot be carried out for this contact and event; the message says why."""


@dataclass(frozen=True)
class Compiling:
    """Where a step is compiled to: its place in the file (for errors), the position after it (None at the end),
    where its branches start, and the workspace's templates by key."""

    name: str
    following: int | None
    starts: dict[str, int]
    template: Callable[[str, str], Template]


@dataclass(frozen=True)
class Running:
    """What a run carries a step out for, and the webhook deliveries the run made so far.

    A step reads the contact's context (tripmail.rendering.context) when it runs, not once per run: update_contact
    steps change the contact.
    """

    automation: "Started"
    contact: Contact
    event: EventColumns
    workspace_id: int
    data: dict[str, Any]
    custom_data: dict[str, Any]
    field_types: Mapping[str, str]
    now: datetime
    webhooks: list[dict[str, Any]] = field(default_factory=list)


class Done(NamedTuple):
    """A step carried out: the position that follows, what it did (for the run's trail), and when a wait ends."""

    following: int | None
    did: dict[str, Any]
    wake_at: datetime | None = None


@dataclass(frozen=True)
class StepKind:
    """One kind of step. `compile` checks what the file gives and returns the config stored on its row;
    `branches` names the steps nested in it, stored in place after it; `carry_out` runs it."""

    model: type | UnionType
    compile: Callable[[Any, Compiling], dict[str, Any]]
    carry_out: Callable[[Step, Running], Done]
    sends: bool = False
    branches: Callable[[Any], dict[str, list[StepSpec]]] = lambda _: {}


def compile_program(
    specs: list[StepSpec],
    where: str,
    *,
    template: Callable[[str, str], Template],
    start: int = 0,
    after: int | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The steps as a flat program from position `start` on, branches in place after their condition.

    Every step names the position that follows it (`next`, None at the end): a branch's last step goes on after its
    condition, `after`. A run's state is then one position, and a step keeps its position (and the messages
    pointing at it their history) while the steps before it stay the same.
    """
    program: list[tuple[str, dict[str, Any]]] = []
    position = start
    for index, spec in enumerate(specs):
        name = f"{where}[{index}]"
        end = position + _size(spec)
        following = end if index < len(specs) - 1 else after
        kind = KINDS[spec.kind]
        branches = kind.branches(spec.value)
        starts: dict[str, int] = {}
        branch_start = position + 1
        for branch, steps in branches.items():
            starts[branch] = branch_start
            branch_start += sum(map(_size, steps))
        program.append((spec.kind, kind.compile(spec.value, Compiling(name, following, starts, template))))
        for branch, steps in branches.items():
            program += compile_program(
                steps, f"{name}.{spec.kind}.{branch}", template=template, start=starts[branch], after=following
            )
        position = end
    return program


def _size(spec: StepSpec) -> int:
    """How many program positions the step takes: a condition takes its branches' too."""
    branches = KINDS[spec.kind].branches(spec.value)
    return 1 + sum(_size(step) for steps in branches.values() for step in steps)


def kind_of(step: Step) -> StepKind:
    """The step's kind, or StepFailed for one a later version stored."""
    kind = KINDS.get(step.kind)
    if kind is None:
        raise StepFailed(f"no step kind {step.kind!r} in this version of Tripmail")
    return kind


def sends_mail(kind: str) -> bool:
    """Whether steps of this kind become messages (an unknown kind does not: its run fails there)."""
    known = KINDS.get(kind)
    return known is not None and known.sends


def _compile_send_email(spec: SendEmailStep, at: Compiling) -> dict[str, Any]:
    template = at.template(spec.template, f"{at.name}.send_email.template")
    config: dict[str, Any] = {"template_id": template.id, "template": template.key, "next": at.following}
    if spec.transactional:
        config["transactional"] = True
    return config


def _send_email(step: Step, run: Running) -> Done:
    return Done(step.config["next"], {"template": step.config["template"]})


def _compile_wait(spec: int | str | WaitUntil, at: Compiling) -> dict[str, Any]:
    if isinstance(spec, WaitUntil):
        return {"until": spec.until, "next": at.following}
    try:
        seconds = parse_duration(spec)
    except ValueError as exc:
        raise InvalidConfig(f"{at.name}.wait: {exc}") from exc
    return {"seconds": seconds, "next": at.following}


def _wait(step: Step, run: Running) -> Done:
    wake_at = _wake_time(step.config, data=run.data, now=run.now)
    return Done(step.config["next"], {"until": wake_at.isoformat()}, wake_at)


def _wake_time(config: dict[str, Any], *, data: dict[str, Any], now: datetime) -> datetime:
    if "seconds" in config:
        return now + timedelta(seconds=config["seconds"])
    path = config["until"]
    value: Any = {"data": data}
    for name in path.split("."):
        value = value.get(name) if isinstance(value, dict) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    raise StepFailed(f"{path} is {value!r}, not a time (ISO 8601, or seconds since the epoch)")


def _compile_condition(spec: ConditionStep, at: Compiling) -> dict[str, Any]:
    check_condition(spec.if_, name=f"{at.name}.condition.if")
    return {
        "if": spec.if_,
        "then": at.starts["then"] if spec.then else at.following,
        "else": at.starts["else"] if spec.else_ else at.following,
        "next": at.following,
    }


def _condition(step: Step, run: Running) -> Done:
    try:
        holds = evaluate(
            step.config["if"], data=run.data, contact=contact_context(run.contact), event=event_context(run.event)
        )
    except ConditionError as exc:
        raise StepFailed(str(exc)) from exc
    branch = "then" if holds else "else"
    return Done(step.config[branch], {"branch": branch})


def _compile_update_contact(spec: UpdateContactStep, at: Compiling) -> dict[str, Any]:
    return {"set": spec.set, "next": at.following}


def _update_contact(step: Step, run: Running) -> Done:
    contact = run.contact
    values = {name: _field_value(name, value, run) for name, value in step.config["set"].items()}
    if any(contact.fields.get(name) != value for name, value in values.items()):
        contact.fields = {**contact.fields, **values}
        contact.updated_at = run.now
    return Done(step.config["next"], {"set": sorted(values)})


def _field_value(name: str, value: Any, run: Running) -> Any:
    """A literal as it is; text with `{{ ... }}` rendered for this event and contact; typed as the field is."""
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        context = template_context(contact_context(run.contact), run.data, event_context(run.event))
        try:
            value = render_part(value, context, html=False)
        except RenderError as exc:
            raise StepFailed(f"field {name}: {exc}") from exc
    field_type = run.field_types.get(name)
    if field_type is None:
        return value
    try:
        return coerce_field_value(field_type, value)
    except ValueError as exc:
        raise StepFailed(f"field {name} ({field_type}): {exc}") from exc


def _compile_webhook(spec: WebhookStep, at: Compiling) -> dict[str, Any]:
    return {"url": spec.url, "secret": spec.secret, "next": at.following}


def _webhook(step: Step, run: Running) -> Done:
    body = _webhook_body(run)
    run.webhooks.append(
        webhook_row(step, run.automation, run.workspace_id, run.event.id, run.contact.id, body, now=run.now)
    )
    return Done(step.config["next"], {"url": step.config["url"]})


def _webhook_body(run: Running) -> str:
    document = {
        "automation_id": run.automation.id,
        "event": {**event_context(run.event), "data": run.data},
        "contact": contact_context(run.contact),
        "custom_data": run.custom_data,
    }
    return json.dumps(document, separators=(",", ":"), sort_keys=True)


def webhook_row(
    step: Step, automation: "Started", workspace_id: int, event_id: str, contact_id: str, body: str, *, now: datetime
) -> dict[str, Any]:
    return {
        "workspace_id": workspace_id,
        "event_id": event_id,
        "automation_id": automation.id,
        "step_id": step.id,
        "contact_id": contact_id,
        "url": step.config["url"],
        "body": body,
        "status": WebhookStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "enqueued_at": None,
        "last_code": None,
        "last_error": None,
        "created_at": now,
        "updated_at": now,
    }


def _condition_branches(spec: ConditionStep) -> dict[str, list[StepSpec]]:
    return {"then": spec.then, "else": spec.else_}


# In the order the apply file's error for a step of no kind, or of two, lists them.
KINDS: dict[str, StepKind] = {
    "send_email": StepKind(SendEmailStep, _compile_send_email, _send_email, sends=True),
    "wait": StepKind(int | str | WaitUntil, _compile_wait, _wait),
    "condition": StepKind(ConditionStep, _compile_condition, _condition, branches=_condition_branches),
    "update_contact": StepKind(UpdateContactStep, _compile_update_contact, _update_contact),
    "webhook": StepKind(WebhookStep, _compile_webhook, _webhook),
}
