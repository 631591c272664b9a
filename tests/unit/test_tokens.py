from datetime import UTC, datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tests.support.builders import apply_spec, password_reset_spec
from tripmail.errors import InvalidRequest
from tripmail.models import ApiToken, Workspace
from tripmail.setup.tokens import SECRET_PREFIX, create_token, find_token, hash_secret, parse_scopes

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_secret_is_shown_once_and_only_its_hash_is_stored(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        apply_spec(session, password_reset_spec("acme"))
        workspace = session.scalars(select(Workspace)).one()
        secret = create_token(session, workspace, ["events:write"], now=NOW)
    with sessions() as session:
        stored = session.scalars(select(ApiToken)).one()
    assert secret.startswith(SECRET_PREFIX)
    assert len(secret) >= len(SECRET_PREFIX) + 43  # 256 random bits, base64url
    assert stored.secret_sha256 == hash_secret(secret)
    assert secret not in (stored.secret_sha256, stored.prefix)
    assert stored.scopes == ["events:write"]


def test_find_token_accepts_the_secret_and_refuses_others(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        apply_spec(session, password_reset_spec("acme"))
        workspace = session.scalars(select(Workspace)).one()
        secret = create_token(session, workspace, ["events:write"], now=NOW)
    with sessions.begin() as session:
        found = find_token(session, secret)
        assert found is not None and found.workspace_id == workspace.id
        assert find_token(session, secret + "x") is None
        assert find_token(session, "") is None
        found.revoked_at = NOW
    with sessions() as session:
        assert find_token(session, secret) is None


def test_two_tokens_never_share_a_secret(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        apply_spec(session, password_reset_spec("acme"))
        workspace = session.scalars(select(Workspace)).one()
        secrets = {create_token(session, workspace, ["events:write"], now=NOW) for _ in range(20)}
    assert len(secrets) == 20


def test_scopes_are_parsed_and_unknown_ones_named() -> None:
    assert parse_scopes("events:write, contacts:write,events:write") == ["contacts:write", "events:write"]
    with pytest.raises(InvalidRequest, match=r"events:delete"):
        parse_scopes("events:write,events:delete")
    with pytest.raises(InvalidRequest, match="none given"):
        parse_scopes(" , ")
