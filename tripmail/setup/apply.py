"""`tripmail apply FILE.yaml`: make the database say what the file says, changing nothing when it already does."""

import secrets
from datetime import datetime
from email.utils import parseaddr
from pathlib import Path
from typing import Any, Literal
from uuid import UUID, uuid4

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator, model_validator
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tripmail.automations.conditions import check_condition
from tripmail.contacts.fields import FieldType
from tripmail.durations import parse_duration
from tripmail.errors import InvalidConfig
from tripmail.ids import normalize_key
from tripmail.ingest.dedupe import DEFAULT_DEDUPE_WINDOW_S
from tripmail.models import Automation, AutomationStep, ContactField, EventType, Template, Workspace
from tripmail.rendering.templates import check_template

DEFAULT_FROM = "Tripmail <noreply@tripmail.localhost>"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContactFieldSpec(_Spec):
    name: str = Field(min_length=1, max_length=100)
    type: FieldType
    number: int | None = Field(default=None, ge=1, description="esputnik's profileInputId for this field")


class EventTypeSpec(_Spec):
    key: str = Field(min_length=1, max_length=100)
    name: str | None = None
    uuid: UUID | None = None
    params: dict[str, FieldType] = Field(default_factory=dict)
    dedupe_window: int | str | None = None

    @field_validator("dedupe_window")
    @classmethod
    def _parse_window(cls, value: int | str | None) -> int | None:
        return None if value is None else parse_duration(value)


class TemplateSpec(_Spec):
    key: str = Field(min_length=1, max_length=100)
    subject: str
    html: str | None = None
    text: str | None = None
    syntax: Literal["jinja", "apicontent", "velocity"] = "jinja"
    data_param: str | None = Field(
        default=None, max_length=100, description="the param that `data` means in this template (esputnik's JSON)"
    )


class SendEmailStep(_Spec):
    template: str
    # esputnik's "Send obligatory (transactional) email": this step mails without marketing consent and without
    # unsubscribe headers, in an automation that otherwise is marketing.
    transactional: bool = False


class ConditionStep(_Spec):
    """`if` (see tripmail.automations.conditions) chooses `then` or `else`; either may be empty, and both go on
    after."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    if_: str = Field(alias="if", min_length=1, max_length=2000)
    then: list["StepSpec"] = Field(default_factory=list)
    else_: list["StepSpec"] = Field(default_factory=list, alias="else")


class WaitUntil(_Spec):
    """Wait until the time the event's data gives (ISO 8601, or seconds since the epoch)."""

    until: str = Field(pattern=r"^data(\.[A-Za-z_][A-Za-z0-9_]*)+$", description="e.g. data.delivery_at")


class UpdateContactStep(_Spec):
    """Contact fields to set: a literal, or text with `{{ data.x }}` / `{{ contact.x }}` rendered for the event."""

    set: dict[str, JsonValue] = Field(min_length=1)


class WebhookStep(_Spec):
    """POST the event, the contact and the trigger's `custom_data` as JSON, signed with `secret` (HMAC-SHA256)."""

    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)
    secret: str | None = Field(default=None, min_length=16, max_length=200)


class StepSpec(_Spec):
    """One step: exactly one of its kinds."""

    send_email: SendEmailStep | None = None
    wait: int | str | WaitUntil | None = Field(default=None, description="a duration (2d, 90m) or {until: data.x}")
    condition: ConditionStep | None = None
    update_contact: UpdateContactStep | None = None
    webhook: WebhookStep | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "StepSpec":
        given = [name for name in STEP_KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a step is exactly one of {', '.join(STEP_KINDS)}; got {', '.join(given) or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in STEP_KINDS if getattr(self, name) is not None)


STEP_KINDS = ("send_email", "wait", "condition", "update_contact", "webhook")


class AutomationSpec(_Spec):
    name: str = Field(min_length=1, max_length=200)
    id: int | None = Field(default=None, ge=1)
    trigger: str | None = Field(default=None, max_length=100)
    status: Literal["active", "paused", "draft"] = "active"
    transactional: bool = False
    link: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{32,64}$",
        description="altcraft v1.0 link secret (at least 128 bits); generated when absent",
    )
    steps: list[StepSpec] = Field(min_length=1)


class ApplyFile(_Spec):
    workspace: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    from_address: str | None = Field(default=None, alias="from")
    contact_fields: list[ContactFieldSpec] = Field(default_factory=list)
    event_types: list[EventTypeSpec] = Field(default_factory=list)
    templates: list[TemplateSpec] = Field(default_factory=list)
    automations: list[AutomationSpec] = Field(default_factory=list)

    @field_validator("from_address")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "\r" in value or "\n" in value or "@" not in parseaddr(value)[1]:
            raise ValueError("expected a sender such as 'Acme <noreply@acme.example>' on one line")
        return value


def load_apply_file(path: Path) -> ApplyFile:
    """Parse and validate; every error names where in the file it is."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidConfig(f"{path}: not valid YAML: {exc}") from exc
    try:
        return ApplyFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}" for error in exc.errors()
        )
        raise InvalidConfig(f"{path}: {problems}") from exc


def apply_file(session: Session, spec: ApplyFile, *, now: datetime) -> list[str]:
    """Upsert everything the file declares; return one line per change (none when already applied)."""
    changes: list[str] = []
    workspace = _apply_workspace(session, spec, changes, now=now)
    for field_spec in spec.contact_fields:
        _apply_contact_field(session, workspace, field_spec, changes)
    for event_type_spec in spec.event_types:
        _apply_event_type(session, workspace, event_type_spec, changes, now=now)
    templates = {t.key: _apply_template(session, workspace, t, changes, now=now) for t in spec.templates}
    for automation_spec in spec.automations:
        _apply_automation(session, workspace, automation_spec, templates, changes, now=now)
    session.flush()
    return changes


def _set_changed(row: Any, values: dict[str, Any]) -> list[str]:
    """Assign only the values that differ, so an unchanged row is not touched."""
    changed = [name for name, value in values.items() if getattr(row, name) != value]
    for name in changed:
        setattr(row, name, values[name])
    return changed


def _apply_workspace(session: Session, spec: ApplyFile, changes: list[str], *, now: datetime) -> Workspace:
    workspace = session.scalars(select(Workspace).where(Workspace.key == spec.workspace)).one_or_none()
    if workspace is None:
        workspace = Workspace(key=spec.workspace, from_address=spec.from_address or DEFAULT_FROM, created_at=now)
        session.add(workspace)
        session.flush()
        changes.append(f"created workspace {spec.workspace}")
    elif spec.from_address and _set_changed(workspace, {"from_address": spec.from_address}):
        changes.append(f"updated workspace {spec.workspace}: from")
    return workspace


def _apply_contact_field(session: Session, workspace: Workspace, spec: ContactFieldSpec, changes: list[str]) -> None:
    row = session.scalars(
        select(ContactField).where(ContactField.workspace_id == workspace.id, ContactField.name == spec.name)
    ).one_or_none()
    values = {"type": spec.type, "number": spec.number}
    if row is None:
        session.add(ContactField(workspace_id=workspace.id, name=spec.name, **values))
        changes.append(f"created contact field {spec.name}")
    elif changed := _set_changed(row, values):
        changes.append(f"updated contact field {spec.name}: {', '.join(changed)}")


def _apply_event_type(
    session: Session, workspace: Workspace, spec: EventTypeSpec, changes: list[str], *, now: datetime
) -> None:
    row = session.scalars(
        select(EventType).where(
            EventType.workspace_id == workspace.id, EventType.key_normalized == normalize_key(spec.key)
        )
    ).one_or_none()
    values: dict[str, Any] = {"key": spec.key, "name": spec.name or spec.key, "params": spec.params}
    if spec.uuid is not None:
        values["uuid"] = str(spec.uuid)
    if spec.dedupe_window is not None:
        values["dedupe_window_s"] = spec.dedupe_window
    if row is None:
        defaults = {"uuid": str(uuid4()), "dedupe_window_s": DEFAULT_DEDUPE_WINDOW_S}
        session.add(
            EventType(
                workspace_id=workspace.id,
                key_normalized=normalize_key(spec.key),
                created_at=now,
                **(defaults | values),
            )
        )
        changes.append(f"created event type {spec.key}")
    elif changed := _set_changed(row, values):
        changes.append(f"updated event type {spec.key}: {', '.join(changed)}")


def _apply_template(
    session: Session, workspace: Workspace, spec: TemplateSpec, changes: list[str], *, now: datetime
) -> Template:
    for part in ("subject", "html", "text"):
        source = getattr(spec, part)
        if source is not None:
            check_template(source, name=f"templates.{spec.key}.{part}", syntax=spec.syntax)
    if spec.html is None and spec.text is None:
        raise InvalidConfig(f"templates.{spec.key}: give html, text or both")
    row = session.scalars(
        select(Template).where(Template.workspace_id == workspace.id, Template.key == spec.key)
    ).one_or_none()
    values = {
        "subject": spec.subject,
        "html": spec.html,
        "text": spec.text,
        "syntax": spec.syntax,
        "data_param": spec.data_param,
    }
    if row is None:
        row = Template(workspace_id=workspace.id, key=spec.key, updated_at=now, **values)
        session.add(row)
        session.flush()
        changes.append(f"created template {spec.key}")
    elif changed := _set_changed(row, values):
        row.updated_at = now
        changes.append(f"updated template {spec.key}: {', '.join(changed)}")
    return row


def _find_automation(session: Session, workspace: Workspace, spec: AutomationSpec) -> Automation | None:
    if spec.id is None:
        return session.scalars(
            select(Automation).where(Automation.workspace_id == workspace.id, Automation.name == spec.name)
        ).one_or_none()
    row = session.get(Automation, spec.id)
    if row is not None and row.workspace_id != workspace.id:
        raise InvalidConfig(f"automations.{spec.name}: id {spec.id} belongs to another workspace")
    return row


def _apply_automation(
    session: Session,
    workspace: Workspace,
    spec: AutomationSpec,
    templates: dict[str, Template],
    changes: list[str],
    *,
    now: datetime,
) -> None:
    steps = _program(session, workspace, spec.steps, templates, f"automations.{spec.name}.steps", start=0, after=None)

    row = _find_automation(session, workspace, spec)
    values: dict[str, Any] = {
        "name": spec.name,
        "trigger": spec.trigger,
        "trigger_normalized": normalize_key(spec.trigger) if spec.trigger else None,
        "status": spec.status,
        "transactional": spec.transactional,
    }
    if spec.link is not None:
        values["link"] = spec.link
    if row is None:
        row = Automation(workspace_id=workspace.id, updated_at=now, **({"link": secrets.token_hex(24)} | values))
        if spec.id is not None:
            row.id = spec.id
        session.add(row)
        _apply_steps(row, steps)
        session.flush()
        if spec.id is not None and session.get_bind().dialect.name == "postgresql":
            # An explicit id does not move PostgreSQL's sequence; without this the next automation collides.
            session.execute(
                text("SELECT setval(pg_get_serial_sequence('automations', 'id'), (SELECT max(id) FROM automations))")
            )
        link = f"/compat/altcraft/trg/{row.link}/<email|md5|xxh>"
        changes.append(f"created automation {spec.name} (id {row.id}; altcraft v1.0 link {link})")
        return
    changed = _set_changed(row, values)
    if _apply_steps(row, steps):
        changed.append("steps")
    if changed:
        row.updated_at = now
        changes.append(f"updated automation {spec.name}: {', '.join(changed)}")


def _size(step: StepSpec) -> int:
    """How many program positions the step takes: a condition takes its branches' too."""
    if step.condition is None:
        return 1
    return 1 + sum(map(_size, step.condition.then)) + sum(map(_size, step.condition.else_))


def _program(
    session: Session,
    workspace: Workspace,
    specs: list[StepSpec],
    templates: dict[str, Template],
    where: str,
    *,
    start: int,
    after: int | None,
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
        if spec.send_email is not None:
            template = _template(session, workspace, spec.send_email.template, templates, f"{name}.send_email.template")
            config = {"template_id": template.id, "template": template.key, "next": following}
            if spec.send_email.transactional:
                config["transactional"] = True
            program.append(("send_email", config))
        elif spec.condition is not None:
            check_condition(spec.condition.if_, name=f"{name}.condition.if")
            then_start = position + 1
            else_start = then_start + sum(map(_size, spec.condition.then))
            program.append(
                (
                    "condition",
                    {
                        "if": spec.condition.if_,
                        "then": then_start if spec.condition.then else following,
                        "else": else_start if spec.condition.else_ else following,
                        "next": following,
                    },
                )
            )
            for branch, steps, branch_start in (
                ("then", spec.condition.then, then_start),
                ("else", spec.condition.else_, else_start),
            ):
                program += _program(
                    session,
                    workspace,
                    steps,
                    templates,
                    f"{name}.condition.{branch}",
                    start=branch_start,
                    after=following,
                )
        elif spec.update_contact is not None:
            program.append(("update_contact", {"set": spec.update_contact.set, "next": following}))
        elif spec.webhook is not None:
            program.append(("webhook", {"url": spec.webhook.url, "secret": spec.webhook.secret, "next": following}))
        elif isinstance(spec.wait, WaitUntil):
            program.append(("wait", {"until": spec.wait.until, "next": following}))
        elif spec.wait is not None:
            try:
                seconds = parse_duration(spec.wait)
            except ValueError as exc:
                raise InvalidConfig(f"{name}.wait: {exc}") from exc
            program.append(("wait", {"seconds": seconds, "next": following}))
        position = end
    return program


def _template(session: Session, workspace: Workspace, key: str, templates: dict[str, Template], where: str) -> Template:
    template = (
        templates.get(key)
        or session.scalars(
            select(Template).where(Template.workspace_id == workspace.id, Template.key == key)
        ).one_or_none()
    )
    if template is None:
        raise InvalidConfig(f"{where}: no template {key!r} in workspace {workspace.key}")
    return template


def _apply_steps(automation: Automation, steps: list[tuple[str, dict[str, Any]]]) -> bool:
    """Update steps in place by position, so the messages that point at a step keep their history."""
    existing = {step.position: step for step in automation.steps}
    changed = False
    for position, (kind, config) in enumerate(steps):
        step = existing.pop(position, None)
        if step is None:
            automation.steps.append(AutomationStep(position=position, kind=kind, config=config))
            changed = True
        elif _set_changed(step, {"kind": kind, "config": config}):
            changed = True
    for step in existing.values():
        automation.steps.remove(step)
        changed = True
    return changed
