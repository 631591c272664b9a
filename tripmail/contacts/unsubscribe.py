"""One-click unsubscribe (RFC 8058): signed links in marketing mail, and the consent change they record."""

import hashlib
import hmac
import re
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


# The form unsubscribe_token makes: a workspace id that fits a 64-bit integer, a contact id (a UUID, within its
# column's 36 characters) and a signature of 32 hex digits. Anything else is refused before it reaches the database,
# which would fail on an id out of range or a NUL rather than find nothing.
_TOKEN = re.compile(r"([1-9][0-9]{0,18})\.([0-9A-Za-z-]{1,36})\.([0-9a-f]{32})")
_MAX_ID = 2**63 - 1


def token_parts(token: str) -> tuple[int, str, str] | None:
    """The workspace id, contact id and signature of a link of unsubscribe_token's form; None for anything else."""
    matched = _TOKEN.fullmatch(token)
    if matched is None or int(matched[1]) > _MAX_ID:
        return None
    return int(matched[1]), matched[2], matched[3]


def contact_of_token(session: Session, token: str) -> Contact:
    """The contact an unsubscribe link names; a link that was not made by Tripmail names nobody."""
    parts = token_parts(token)
    if parts is not None:
        workspace_id, contact_id, signature = parts
        workspace = session.get(Workspace, workspace_id)
        if workspace is not None and hmac.compare_digest(
            signature, workspace_signature(workspace.unsubscribe_secret, f"{workspace.id}.{contact_id}")
        ):
            contact = session.get(Contact, contact_id)
            if contact is not None and contact.workspace_id == workspace.id:
                return contact
    raise NotFound("this unsubscribe link is not valid", field="token")


def unsubscribe(session: Session, token: str, *, now: datetime) -> Contact:
    """Withdraw the contact's consent to marketing email; following the same link again changes nothing more."""
    contact = contact_of_token(session, token)
    if contact.consents.get("email") is not False:
        contact.consents = {**contact.consents, "email": False}
        contact.updated_at = now
    return contact
