"""Which automations an event starts."""

from typing import TYPE_CHECKING

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from tripmail.ids import normalize_key
from tripmail.models import Automation

if TYPE_CHECKING:
    from tripmail.schemas.trigger import TriggerRequest


# Built once: every one-contact event runs it, and building it cost more than running it.
_ACTIVE_ON_EVENT = (
    select(Automation)
    .where(
        Automation.workspace_id == bindparam("ws"),
        Automation.trigger_normalized == bindparam("key"),
        Automation.status == "active",
    )
    .order_by(Automation.id)
)
_COUNT_ACTIVE_ON_EVENT = select(func.count()).select_from(_ACTIVE_ON_EVENT.order_by(None).subquery())


def matching_automations(session: Session, workspace_id: int, event_key: str) -> list[Automation]:
    """Active automations whose trigger equals the event key, case-insensitively."""
    return list(session.scalars(_ACTIVE_ON_EVENT, {"ws": workspace_id, "key": normalize_key(event_key)}))


def count_matching_automations(session: Session, workspace_id: int, event_key: str) -> int:
    count = session.scalar(_COUNT_ACTIVE_ON_EVENT, {"ws": workspace_id, "key": normalize_key(event_key)})
    return count or 0


def automations_for(session: Session, trigger: "TriggerRequest") -> list[Automation]:
    """What the trigger starts: the active automations on its event, or the one automation it names if active."""
    if trigger.automation_id is None:
        assert trigger.event is not None
        return matching_automations(session, trigger.workspace_id, trigger.event)
    automation = find_automation(session, trigger.workspace_id, trigger.automation_id)
    return [automation] if automation is not None and automation.status == "active" else []


def find_automation(session: Session, workspace_id: int, automation_id: int) -> Automation | None:
    automation = session.get(Automation, automation_id)
    return automation if automation is not None and automation.workspace_id == workspace_id else None


def find_automation_by_link(session: Session, link: str) -> Automation | None:
    return session.scalars(select(Automation).where(Automation.link == link)).one_or_none()
