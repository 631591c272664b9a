"""Small plain builders, one per thing a test needs."""

import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tripmail.contacts.store import email_md5, email_xxh
from tripmail.ids import new_id, utcnow
from tripmail.ingest.events import record_event
from tripmail.models import Workspace
from tripmail.schemas.trigger import Audience, TriggerRequest
from tripmail.setup.apply import ApplyFile, apply_file
from tripmail.setup.tokens import create_token


def unique_workspace_key(prefix: str = "ws") -> str:
    return f"{prefix}-{new_id()[-12:]}"


def sender_of(workspace: str) -> str:
    """Each workspace sends from its own address, so a test can tell its mail apart at the shared sink."""
    return f"noreply@{workspace}.example.com"


def password_reset_spec(workspace: str, event: str = "FORGOT_PASSWORD", **automation: Any) -> dict[str, Any]:
    """The quickstart's shape: FORGOT_PASSWORD (or `event`) → one transactional email."""
    return {
        "workspace": workspace,
        "from": f"Acme <{sender_of(workspace)}>",
        "event_types": [{"key": event, "name": event.replace("_", " ").title()}],
        "templates": [
            {
                "key": "reset",
                "subject": "Reset for {{ contact.email }}",
                "text": "Hi {{ contact.first_name }}, reset here: {{ forgot_password_link }}",
                "html": "<a href='{{ forgot_password_link }}'>Reset</a> {{ data.note }}",
            }
        ],
        "automations": [
            {
                "name": "Password reset",
                "trigger": event,
                "transactional": True,
                "steps": [{"send_email": {"template": "reset"}}],
            }
            | automation
        ],
    }


def follow_up_spec(key: str, status: str = "active", wait: str = "2s") -> dict[str, Any]:
    """A welcome at once, then a follow-up after `wait`."""
    return {
        "workspace": key,
        "from": f"Shop <{sender_of(key)}>",
        "templates": [
            {"key": "welcome", "subject": "Welcome {{ contact.email }}", "text": "hello"},
            {"key": "follow_up", "subject": "Still there, {{ contact.email }}?", "text": "again"},
        ],
        "automations": [
            {
                "name": "Follow up",
                "trigger": "signed_up",
                "status": status,
                "steps": [
                    {"send_email": {"template": "welcome"}},
                    {"wait": wait},
                    {"send_email": {"template": "follow_up"}},
                ],
            }
        ],
    }


def apply_spec(session: Session, spec: dict[str, Any]) -> list[str]:
    return apply_file(session, ApplyFile.model_validate(spec), now=utcnow())


def make_token(session: Session, workspace_key: str, scopes: list[str] | None = None) -> str:
    workspace = session.scalars(select(Workspace).where(Workspace.key == workspace_key)).one()
    return create_token(session, workspace, scopes or ["events:write"], now=utcnow())


def contact_row(
    workspace_id: int, contact_id: str, email: str, fields: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """A contacts row for a bulk INSERT: how tests build audiences of thousands without the upsert path."""
    return {
        "id": contact_id,
        "workspace_id": workspace_id,
        "email": email,
        "email_md5": email_md5(email),
        "email_xxh": email_xxh(email),
        "fields": fields,
        "consents": {"email": True},
        "created_at": now,
        "updated_at": now,
    }


def write_yaml(directory: Path, text: str) -> Path:
    path = directory / "apply.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def workspace_with_messages(
    sessions: sessionmaker[Session], key: str, emails: list[str], *, now: datetime
) -> tuple[int, list[int]]:
    """A workspace with the password-reset automation and a pending message to each address."""
    with sessions.begin() as session:
        apply_spec(session, password_reset_spec(key))
        workspace_id = session.scalars(select(Workspace.id).where(Workspace.key == key)).one()
        messages = [
            message_id
            for email in emails
            for message_id in record_event(
                session,
                new_id(),
                TriggerRequest(workspace_id=workspace_id, event="forgot_password", audience=Audience(email=email)),
                now=now,
            ).ids
        ]
    return workspace_id, messages
