"""Which automations an event starts."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, func, select
from sqlalchemy.orm import Session

from tripmail.ids import normalize_key
from tripmail.models import Automation, AutomationStep, table_of

if TYPE_CHECKING:
    from tripmail.schemas.trigger import TriggerRequest


@dataclass(frozen=True)
class SendStep:
    id: int
    template_id: int
    # The step mails as transactional mail even when its automation is not.
    transactional: bool = False


@dataclass(frozen=True)
class Step:
    """One position of an automation's program (see tripmail.apply._program)."""

    id: int
    kind: str
    config: dict[str, Any]


@dataclass(frozen=True)
class Started:
    """What planning reads of an automation an event starts: its id, whether it is transactional, its send_email
    steps in order, and, when it has other steps too, its whole program, which tripmail.runs carries out. Read as
    plain columns: loading Automation entities with their steps (a second, selectin query) was the costliest part
    of recording a one-contact event."""

    id: int
    transactional: bool
    send_steps: tuple[SendStep, ...]
    program: tuple[Step, ...] = ()

    @property
    def is_workflow(self) -> bool:
        """Whether it has steps other than send_email, and so a run of its own for each contact and event."""
        return bool(self.program)


_AUTOMATIONS = table_of(Automation)
_STEPS = table_of(AutomationStep)


_ACTIVE = and_(_AUTOMATIONS.c.workspace_id == bindparam("ws"), _AUTOMATIONS.c.status == "active")
_ON_EVENT = _AUTOMATIONS.c.trigger_normalized == bindparam("key")


def _started(where: ColumnElement[bool]) -> Select[Any]:
    # Built once per shape, in table columns (the ORM's execution path costs twice as much): every one-contact
    # event runs one, and building it cost more than running it.
    automations, steps = _AUTOMATIONS.c, _STEPS.c
    return (
        select(automations.id, automations.transactional, steps.id, steps.kind, steps.config)
        .outerjoin(_STEPS, steps.automation_id == automations.id)
        .where(_ACTIVE, where)
        .order_by(automations.id, steps.position)
    )


_STARTED_ON_EVENT = _started(_ON_EVENT)
_STARTED_BY_ID = _started(_AUTOMATIONS.c.id == bindparam("automation"))
_COUNT_ACTIVE_ON_EVENT = select(func.count()).select_from(_AUTOMATIONS).where(_ACTIVE, _ON_EVENT)


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
    sends = tuple(
        SendStep(step.id, step.config["template_id"], step.config.get("transactional", False))
        for step in program
        if step.kind == "send_email"
    )
    workflow = any(step.kind != "send_email" for step in program)
    return Started(automation_id, transactional, sends, tuple(program) if workflow else ())


def count_matching_automations(session: Session, workspace_id: int, event_key: str) -> int:
    count = session.scalar(_COUNT_ACTIVE_ON_EVENT, {"ws": workspace_id, "key": normalize_key(event_key)})
    return count or 0


def automations_for(session: Session, trigger: "TriggerRequest") -> list[Started]:
    """What the trigger starts: the active automations whose trigger is its event key (case-insensitively), or
    the one automation it names if that is active."""
    if trigger.automation_id is None:
        assert trigger.event is not None
        parameters = {"ws": trigger.workspace_id, "key": normalize_key(trigger.event)}
        return _group(session.execute(_STARTED_ON_EVENT, parameters))
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
