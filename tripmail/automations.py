"""Which automations an event starts."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from tripmail.ids import normalize_key
from tripmail.models import Automation


def matching_automations(session: Session, workspace_id: int, event_key: str) -> list[Automation]:
    """Active automations whose trigger equals the event key, case-insensitively."""
    return list(
        session.scalars(
            select(Automation)
            .where(
                Automation.workspace_id == workspace_id,
                Automation.trigger_normalized == normalize_key(event_key),
                Automation.status == "active",
            )
            .order_by(Automation.id)
        )
    )
