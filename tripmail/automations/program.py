"""Which automations an event starts, and which of their mail is transactional (so goes to the fast lane)."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, select
from sqlalchemy.orm import Session

from tripmail.automations.steps import SendStep, Step, sends_mail
from tripmail.ids import normalize_key
from tripmail.models import Automation, AutomationStep, Message, table_of
from tripmail.queue import ByLane

if TYPE_CHECKING:
    from tripmail.schemas.trigger import TriggerRequest


@dataclass(frozen=True)
class Started:
    """What planning reads of an automation an event starts: its id, whether it is transactional, its send_email
    steps in order, and, when it has other steps too, its whole program, which tripmail.automations.runs carries
    out. Read as plain columns: loading Automation entities with their steps (a second, selectin query) would be the
    costliest part of recording a one-contact event."""

    id: int
    transactional: bool
    send_steps: tuple[SendStep, ...]
    program: tuple[Step, ...] = ()

    @property
    def mails_transactional(self) -> bool:
        """Whether it sends transactional mail: it is transactional, or one of its send_email steps is."""
        return self.transactional or any(step.transactional for step in self.send_steps)

    @property
    def is_workflow(self) -> bool:
        """Whether it has steps other than send_email, and so a run of its own for each contact and event."""
        return bool(self.program)


_AUTOMATIONS = table_of(Automation)
_STEPS = table_of(AutomationStep)


_ACTIVE = and_(_AUTOMATIONS.c.workspace_id == bindparam("ws"), _AUTOMATIONS.c.status == "active")
_ON_EVENT = _AUTOMATIONS.c.trigger_normalized == bindparam("key")


def _started(where: ColumnElement[bool]) -> Select[Any]:
    # Built once per shape, in table columns (the ORM's execution path costs more: bench/results.md, What the
    # code's shape rests on): every one-contact event runs one, and building it costs more than running it.
    automations, steps = _AUTOMATIONS.c, _STEPS.c
    return (
        select(automations.id, automations.transactional, steps.id, steps.kind, steps.config)
        .outerjoin(_STEPS, steps.automation_id == automations.id)
        .where(_ACTIVE, where)
        .order_by(automations.id, steps.position)
    )


_STARTED_ON_EVENT = _started(_ON_EVENT)
_STARTED_BY_ID = _started(_AUTOMATIONS.c.id == bindparam("automation"))


def _group(rows: Iterable[Sequence[Any]]) -> list[Started]:
    steps: dict[int, list[Step]] = {}
    transactional: dict[int, bool] = {}
    for automation_id, is_transactional, step_id, kind, config in rows:
        transactional[automation_id] = is_transactional
        automation_steps = steps.setdefault(automation_id, [])
        if step_id is not None:
            automation_steps.append(Step(step_id, kind, config))
    return [_started_from(key, transactional[key], program) for key, program in steps.items()]


def _started_from(automation_id: int, transactional: bool, program: list[Step]) -> Started:
    sends = tuple(SendStep.of(step) for step in program if sends_mail(step.kind))
    workflow = any(not sends_mail(step.kind) for step in program)
    return Started(automation_id, transactional, sends, tuple(program) if workflow else ())


def automations_on(session: Session, workspace_id: int, event_key: str) -> list[Started]:
    """The active automations whose trigger is the event key (case-insensitively)."""
    return _group(session.execute(_STARTED_ON_EVENT, {"ws": workspace_id, "key": normalize_key(event_key)}))


def automations_for(session: Session, trigger: "TriggerRequest") -> list[Started]:
    """What the trigger starts: the active automations whose trigger is its event key, or the one automation it
    names if that is active."""
    if trigger.automation_id is None:
        assert trigger.event is not None
        return automations_on(session, trigger.workspace_id, trigger.event)
    started = started_automation(session, trigger.workspace_id, trigger.automation_id)
    return [started] if started is not None else []


def started_automation(session: Session, workspace_id: int, automation_id: int) -> Started | None:
    """The automation as planning reads it, if it is active."""
    started = _group(session.execute(_STARTED_BY_ID, {"ws": workspace_id, "automation": automation_id}))
    return started[0] if started else None


def find_automation(session: Session, workspace_id: int, automation_id: int) -> Automation | None:
    automation = session.get(Automation, automation_id)
    return automation if automation is not None and automation.workspace_id == workspace_id else None


def find_automation_by_link(session: Session, link: str) -> Automation | None:
    return session.scalars(select(Automation).where(Automation.link == link)).one_or_none()


def transactional_steps(automations: Iterable[Started]) -> set[int]:
    """The send_email steps (by id, unique across automations) whose mail is transactional: their automation is,
    or the step itself."""
    return {
        step.id
        for automation in automations
        for step in automation.send_steps
        if automation.transactional or step.transactional
    }


_MESSAGES = table_of(Message)


def lanes_of_messages(where: ColumnElement[bool]) -> Select[Any]:
    """The messages `where` selects as (id, its automation's flag, its step's config), for split_by_lane: the
    statement that finds them reads their lanes too."""
    return (
        select(_MESSAGES.c.id, _AUTOMATIONS.c.transactional, _STEPS.c.config)
        .join(_AUTOMATIONS, _AUTOMATIONS.c.id == _MESSAGES.c.automation_id)
        .join(_STEPS, _STEPS.c.id == _MESSAGES.c.step_id)
        .where(where)
    )


def split_by_lane(rows: Iterable[Sequence[Any]]) -> ByLane:
    """Rows of lanes_of_messages, by lane: transactional when the automation or the step is."""
    return ByLane.split((row[0], bool(row[1] or row[2].get("transactional", False))) for row in rows)


def messages_by_lane(session: Session, where: ColumnElement[bool]) -> ByLane:
    return split_by_lane(session.execute(lanes_of_messages(where)))
