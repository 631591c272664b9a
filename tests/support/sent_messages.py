"""Messages as delivery leaves them once the relay took them, at a fixed clock: what a bounce or provider report
refers to."""

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from tripmail.delivery.mime import message_id_header
from tripmail.delivery.verp import verp_address
from tripmail.ids import new_id
from tripmail.ingest.recording import record_event
from tripmail.models import Message, MessageStatus, Workspace
from tripmail.schemas.trigger import Audience, TriggerRequest

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
DOMAIN = "bounces.acme.test"


class Sent(NamedTuple):
    id: int
    return_path: str
    message_id_header: str


def sent_message(
    sessions: sessionmaker[Session], workspace_id: int, email: str, status: MessageStatus = MessageStatus.SENT
) -> Sent:
    """A message to `email` as delivery leaves it once the relay took it: its Message-ID stored, and `status`."""
    event_id = new_id()
    with sessions.begin() as session:
        trigger = TriggerRequest(workspace_id=workspace_id, event="FORGOT_PASSWORD", audience=Audience(email=email))
        [message_id] = record_event(session, event_id, trigger, now=NOW).ids
        header = message_id_header(event_id, message_id, "noreply@acme.example.com")
        session.execute(update(Message).where(Message.id == message_id).values(status=status, message_id_header=header))
        secret = session.get_one(Workspace, workspace_id).unsubscribe_secret
    return Sent(message_id, verp_address(message_id, secret, DOMAIN), header)
