"""Which automations an event starts."""

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from tripmail.ids import normalize_key
from tripmail.models import Automation


def _matching(workspace_id: int, event_key: str) -> Select[Automation]:
    return select(Automation).where(
        Automation.workspace_id == workspace_id,
        Automation.trigger_normalized == normalize_key(event_key),
        Automation.status == "active",
    )


def matching_automations(session: Session, workspace_id: int, event_key: str) -> list[Automation]:
    """Active automations whose trigger equals the event key, case-insensitively."""
    return list(session.scalars(_matching(workspace_id, event_key).order_by(Automation.id)))


def count_matching_automations(session: Session, workspace_id: int, event_key: str) -> int:
    count = session.scalar(select(func.count()).select_from(_matching(workspace_id, event_key).subquery()))
    return count or 0
