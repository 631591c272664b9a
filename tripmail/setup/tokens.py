"""API tokens: 256-bit random secrets with a recognisable prefix; only their SHA-256 is stored."""

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from redis import Redis
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tripmail.errors import InvalidRequest, NotFound
from tripmail.models import ApiToken, Workspace

SECRET_PREFIX = "tm_live_"  # noqa: S105 - a public marker, not a secret
KNOWN_SCOPES = frozenset(
    {
        "events:write",
        "events:read",
        "contacts:write",
        "contacts:read",
        "templates:read",
        "bounces:write",
        "webhooks:write",
        "webhooks:read",
    }
)


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
    return create_token_row(session, workspace, scopes, now=now)[1]


def create_token_row(
    session: Session, workspace: Workspace, scopes: list[str], *, now: datetime
) -> tuple[ApiToken, str]:
    """`create_token`, with the stored row: its id is what `tripmail token revoke` takes."""
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        workspace_id=workspace.id,
        prefix=secret[: len(SECRET_PREFIX) + 4],
        secret_sha256=hash_secret(secret),
        scopes=scopes,
        created_at=now,
    )
    session.add(token)
    session.flush()
    return token, secret


def find_token(session: Session, secret: str) -> ApiToken | None:
    """The live token whose secret this is, or None."""
    digest = hash_secret(secret)
    token = session.scalars(select(ApiToken).where(ApiToken.secret_sha256 == digest)).one_or_none()
    # The index lookup already matched; the constant-time compare keeps timing out of the answer all the same.
    if token is None or token.revoked_at is not None or not hmac.compare_digest(token.secret_sha256, digest):
        return None
    return token


def revoked_key(token_id: int) -> str:
    """The Redis marker that tells every api process at once that the token was revoked (api/auth.py)."""
    return f"tripmail:revoked:{token_id}"


@dataclass(frozen=True)
class Revocation:
    token_id: int
    workspace_key: str
    revoked_at: datetime
    already: bool  # revoked before this call, at `revoked_at`


def list_tokens(session: Session, workspace_key: str | None = None) -> list[tuple[ApiToken, str]]:
    """Tokens with their workspace's key, oldest first; of one workspace when a key is given."""
    query = select(ApiToken, Workspace.key).join(Workspace, Workspace.id == ApiToken.workspace_id)
    if workspace_key is not None:
        query = query.where(Workspace.key == workspace_key)
    return [(token, key) for token, key in session.execute(query.order_by(ApiToken.id)).tuples()]


def revoke_tokens(session: Session, token_ids: Sequence[int], *, now: datetime) -> list[Revocation]:
    """Revoke the tokens of these ids, all of them or, when one is unknown, none (NotFound names it).

    Idempotent: a token revoked before keeps its first `revoked_at`, and says so.
    """
    ids = sorted(set(token_ids))
    workspace_keys = dict(
        session.execute(
            select(ApiToken.id, Workspace.key)
            .join(Workspace, Workspace.id == ApiToken.workspace_id)
            .where(ApiToken.id.in_(ids))
        ).all()
    )
    unknown = [token_id for token_id in ids if token_id not in workspace_keys]
    if unknown:
        raise NotFound(f"no token with id {', '.join(map(str, unknown))}; `tripmail token list` shows them")
    # Only where still live, so that of two revocations at once the first one's time stays.
    revoked_now = set(
        session.scalars(
            update(ApiToken)
            .where(ApiToken.id.in_(ids), ApiToken.revoked_at.is_(None))
            .values(revoked_at=now)
            .returning(ApiToken.id),
            execution_options={"synchronize_session": False},
        )
    )
    # A Result has .keys(), so dict() would read it as a mapping: its rows first.
    revoked_at = dict(session.execute(select(ApiToken.id, ApiToken.revoked_at).where(ApiToken.id.in_(ids))).all())
    return [
        Revocation(
            token_id=token_id,
            workspace_key=workspace_keys[token_id],
            revoked_at=revoked_at[token_id] or now,
            already=token_id not in revoked_now,
        )
        for token_id in ids
    ]


def mark_revoked(store: Redis, token_ids: Sequence[int], *, ttl_s: int) -> None:
    """Tell every api process, which may hold these tokens in its cache, to refuse them from its next request.

    Raises RedisError when Redis is unreachable; the database says revoked all the same, and every api process
    reads it again within `setup_cache_s`.
    """
    if not token_ids:
        return
    pipeline = store.pipeline(transaction=False)
    for token_id in token_ids:
        pipeline.set(revoked_key(token_id), 1, ex=ttl_s)
    pipeline.execute()
