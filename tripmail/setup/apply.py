"""`tripmail apply FILE.yaml`: make the database say what the file says, changing nothing when it already does."""

import secrets
from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tripmail.automations.steps import compile_program
from tripmail.errors import InvalidConfig
from tripmail.ids import normalize_key
from tripmail.ingest.dedupe import DEFAULT_DEDUPE_WINDOW_S
from tripmail.models import Automation, AutomationStep, ContactField, EventType, Template, Workspace
from tripmail.rendering.templates import check_template
from tripmail.setup.spec import (
    ApplyFile,
    AutomationSpec,
    ContactFieldSpec,
    EventTypeSpec,
    TemplateSpec,
)

DEFAULT_FROM = "Tripmail <noreply@tripmail.localhost>"


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
    steps = compile_program(
        spec.steps,
        f"automations.{spec.name}.steps",
        template=lambda key, where: _template(session, workspace, key, templates, where),
    )

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
