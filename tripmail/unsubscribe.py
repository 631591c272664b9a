"""One-click unsubscribe (RFC 8058): signed links in marketing mail, and the consent change they record."""

import hashlib
import hmac
from datetime import datetime
from typing import Protocol
from urllib.parse import quote

from sqlalchemy.orm import Session

from tripmail.errors import NotFound
from tripmail.models import Contact, Workspace

ONE_CLICK = "List-Unsubscribe=One-Click"


class Signer(Protocol):
    """What signing a link reads of a workspace: a Workspace, or just these columns of one."""

    @property
    def id(self) -> int: ...
    @property
    def unsubscribe_secret(self) -> str: ...


def unsubscribe_token(workspace: Signer, contact_id: str) -> str:
    """`<workspace id>.<contact id>.<signature>`: names the contact, and only the workspace can have made it."""
    payload = f"{workspace.id}.{contact_id}"
    return f"{payload}.{workspace_signature(workspace.unsubscribe_secret, payload)}"


def unsubscribe_url(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}/unsubscribe/{quote(token, safe='')}"


def workspace_signature(secret: str, payload: str) -> str:
    """An HMAC of `payload` under a workspace's secret: what Tripmail puts in an address or link to know it made it."""
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()[:32]


def contact_of_token(session: Session, token: str) -> Contact:
    """The contact an unsubscribe link names; a link that was not made by Tripmail names nobody."""
    workspace_part, _, rest = token.partition(".")
    contact_id, _, signature = rest.rpartition(".")
    workspace = session.get(Workspace, int(workspace_part)) if workspace_part.isdigit() else None
    contact = session.get(Contact, contact_id) if contact_id else None
    if (
        workspace is None
        or contact is None
        or contact.workspace_id != workspace.id
        or not hmac.compare_digest(
            signature, workspace_signature(workspace.unsubscribe_secret, f"{workspace.id}.{contact_id}")
        )
    ):
        raise NotFound("this unsubscribe link is not valid", field="token")
    return contact


def unsubscribe(session: Session, token: str, *, now: datetime) -> Contact:
    """Withdraw the contact's consent to marketing email; following the same link again changes nothing more."""
    contact = contact_of_token(session, token)
    if contact.consents.get("email") is not False:
        contact.consents = {**contact.consents, "email": False}
        contact.updated_at = now
    return contact
