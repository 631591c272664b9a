"""Small plain builders, one per thing a test needs."""

import textwrap
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session, sessionmaker

from tripmail.contacts.identity import email_md5, email_xxh
from tripmail.ids import new_id, utcnow
from tripmail.ingest.recording import record_event
from tripmail.models import Contact, Workspace
from tripmail.schemas.trigger import Audience, TriggerRequest
from tripmail.setup.apply import apply_file
from tripmail.setup.spec import ApplyFile
from tripmail.setup.tokens import create_token

CAMPAIGN = 3_000_001  # campaign_audience's automation id: the altcraft campaign a test starts


def unique_workspace_key(prefix: str = "ws") -> str:
    return f"{prefix}-{new_id()[-12:]}"


def sender_of(workspace: str) -> str:
    """Each workspace sends from its own address, so a test can tell its mail apart at the shared sink."""
    return f"noreply@{workspace}.example.com"


@dataclass(frozen=True)
class Tenant:
    key: str
    token: str

    @property
    def sender(self) -> str:
        return sender_of(self.key)


def workspace_spec(prefix: str, sender: str = "Shop", **sections: Any) -> dict[str, Any]:
    """An apply file for a workspace of the test's own (its key starts with `prefix`) that sends from its own
    address, with the apply file's other `sections` (templates, automations, contact_fields, ...)."""
    key = unique_workspace_key(prefix)
    return {"workspace": key, "from": f"{sender} <{sender_of(key)}>", **sections}


def make_template(key: str, subject: str, text: str, **options: Any) -> dict[str, Any]:
    """A template of an apply file; `options` are its other keys (html, syntax, data_param, ...)."""
    return {"key": key, "subject": subject, "text": text, **options}


def make_automation(name: str, *steps: str | dict[str, Any], **options: Any) -> dict[str, Any]:
    """An automation of an apply file; a step given as a template's key sends that template, and `options` are
    its other keys (trigger, id, status, transactional, ...)."""
    return {
        "name": name,
        **options,
        "steps": [{"send_email": {"template": step}} if isinstance(step, str) else step for step in steps],
    }


def password_reset_spec(workspace: str, event: str = "FORGOT_PASSWORD", **automation: Any) -> dict[str, Any]:
    """The quickstart's shape: FORGOT_PASSWORD (or `event`) → one transactional email."""
    return {
        "workspace": workspace,
        "from": f"Acme <{sender_of(workspace)}>",
        "event_types": [{"key": event, "name": event.replace("_", " ").title()}],
        "templates": [
            make_template(
                "reset",
                "Reset for {{ contact.email }}",
                "Hi {{ contact.first_name }}, reset here: {{ forgot_password_link }}",
                html="<a href='{{ forgot_password_link }}'>Reset</a> {{ data.note }}",
            )
        ],
        "automations": [make_automation("Password reset", "reset", trigger=event, transactional=True) | automation],
    }


def follow_up_spec(key: str, status: str = "active", wait: str = "2s") -> dict[str, Any]:
    """A welcome at once, then a follow-up after `wait`."""
    return {
        "workspace": key,
        "from": f"Shop <{sender_of(key)}>",
        "templates": [
            make_template("welcome", "Welcome {{ contact.email }}", "hello"),
            make_template("follow_up", "Still there, {{ contact.email }}?", "again"),
        ],
        "automations": [
            make_automation("Follow up", "welcome", {"wait": wait}, "follow_up", trigger="signed_up", status=status)
        ],
    }


def apply_spec(session: Session, spec: dict[str, Any]) -> list[str]:
    return apply_file(session, ApplyFile.model_validate(spec), now=utcnow())


def make_workspace(session: Session, spec: dict[str, Any]) -> int:
    """The workspace an apply file sets up; its id."""
    apply_spec(session, spec)
    return session.scalars(select(Workspace.id).where(Workspace.key == spec["workspace"])).one()


def make_token(session: Session, workspace_key: str, scopes: list[str] | None = None) -> str:
    workspace = session.scalars(select(Workspace).where(Workspace.key == workspace_key)).one()
    return create_token(session, workspace, scopes or ["events:write"], now=utcnow())


def make_tenant(sessions: sessionmaker[Session], spec: dict[str, Any], scopes: list[str] | None = None) -> Tenant:
    """The workspace an apply file sets up, committed, and a token for it with `scopes`."""
    with sessions.begin() as session:
        apply_spec(session, spec)
        return Tenant(spec["workspace"], make_token(session, spec["workspace"], scopes))


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


def make_contact(
    session: Session,
    workspace_id: int,
    email: str,
    *,
    now: datetime,
    contact_id: str | None = None,
    phone: str | None = None,
    fields: dict[str, Any] | None = None,
) -> Contact:
    """A contact of the workspace as the upsert stores it, added to `session`."""
    contact = Contact(**contact_row(workspace_id, contact_id or new_id(), email, fields or {}, now), phone=phone)
    session.add(contact)
    return contact


def write_yaml(directory: Path, text: str) -> Path:
    path = directory / "apply.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def workspace_with_messages(
    sessions: sessionmaker[Session], key: str, emails: list[str], *, now: datetime
) -> tuple[int, list[int]]:
    """A workspace with the password-reset automation and a pending message to each address."""
    with sessions.begin() as session:
        workspace_id = make_workspace(session, password_reset_spec(key))
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


def campaign_audience(db: sessionmaker[Session], size: int) -> tuple[str, str, list[str]]:
    """A workspace with `size` contacts and a campaign that mails them all; its key, token and addresses."""
    spec = workspace_spec(
        "crash",
        sender="Crash",
        contact_fields=[{"name": "rank", "type": "number"}],
        templates=[make_template("hello", "Hello {{ contact.rank }}", "rank {{ contact.rank }}")],
        automations=[make_automation("Crash", "hello", id=CAMPAIGN)],
    )
    key = spec["workspace"]
    emails = [f"{key}-{index}@example.com" for index in range(size)]
    now = datetime.now(UTC)
    with db.begin() as session:
        workspace_id = make_workspace(session, spec)
        token = make_token(session, key)
        rows = [contact_row(workspace_id, f"{key}-{i:05}", email, {"rank": i}, now) for i, email in enumerate(emails)]
        session.execute(insert(Contact), rows)
    return key, token, emails
