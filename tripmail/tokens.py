"""API tokens: 256-bit random secrets with a recognisable prefix; only their SHA-256 is stored."""

import hashlib
import hmac
import secrets
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tripmail.errors import InvalidRequest
from tripmail.models import ApiToken, Workspace

SECRET_PREFIX = "tm_live_"  # noqa: S105 - a public marker, not a secret
KNOWN_SCOPES = frozenset({"events:write", "events:read", "contacts:write", "contacts:read", "templates:read"})


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_scopes(text: str) -> list[str]:
    """Comma-separated scopes, each one Tripmail knows."""
    scopes = sorted({scope.strip() for scope in text.split(",") if scope.strip()})
    unknown = [scope for scope in scopes if scope not in KNOWN_SCOPES]
    if unknown or not scopes:
        raise InvalidRequest(
            f"unknown scope(s) {', '.join(unknown) or '(none given)'}; known: {', '.join(sorted(KNOWN_SCOPES))}",
            field="scopes",
        )
    return scopes


def create_token(session: Session, workspace: Workspace, scopes: list[str], *, now: datetime) -> str:
    """Store a new token for the workspace and return its secret, which is not kept anywhere."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    session.add(
        ApiToken(
            workspace_id=workspace.id,
            prefix=secret[: len(SECRET_PREFIX) + 4],
            secret_sha256=hash_secret(secret),
            scopes=scopes,
            created_at=now,
        )
    )
    session.flush()
    return secret


def find_token(session: Session, secret: str) -> ApiToken | None:
    """The live token whose secret this is, or None."""
    digest = hash_secret(secret)
    token = session.scalars(select(ApiToken).where(ApiToken.secret_sha256 == digest)).one_or_none()
    # The index lookup already matched; the constant-time compare keeps timing out of the answer all the same.
    if token is None or token.revoked_at is not None or not hmac.compare_digest(token.secret_sha256, digest):
        return None
    return token
