"""The api keeps a live token's workspace for a moment: a revocation shows within that moment, a new token at once."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Principal, TokenCache, live_principal
from tests.builders import apply_spec, password_reset_spec
from tripmail.models import ApiToken, Workspace
from tripmail.tokens import SECRET_PREFIX, create_token, hash_secret

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def acme(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        apply_spec(session, password_reset_spec("acme"))
        return session.scalars(select(Workspace.id)).one()


def only_token_id(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalars(select(ApiToken.id)).one()


def test_a_revoked_token_is_refused_once_its_time_is_up(sessions: sessionmaker[Session]) -> None:
    workspace_id = acme(sessions)
    with sessions.begin() as session:
        secret = create_token(session, session.get_one(Workspace, workspace_id), ["events:write"], now=NOW)
    now = [100.0]
    tokens = TokenCache(ttl_s=2.0, clock=lambda: now[0])
    expected = Principal(workspace_id, frozenset({"events:write"}), token_id=only_token_id(sessions))
    assert asyncio.run(live_principal(tokens, sessions, secret)) == expected

    with sessions.begin() as session:
        session.scalars(select(ApiToken)).one().revoked_at = NOW
    now[0] += 1.9
    assert asyncio.run(live_principal(tokens, sessions, secret)) is not None  # still the answer read before
    now[0] += 0.2
    assert asyncio.run(live_principal(tokens, sessions, secret)) is None


def test_a_token_unknown_a_moment_ago_works_as_soon_as_it_exists(sessions: sessionmaker[Session]) -> None:
    workspace_id = acme(sessions)
    secret = SECRET_PREFIX + "made-up-for-this-test"
    tokens = TokenCache(ttl_s=2.0, clock=lambda: 100.0)
    assert asyncio.run(live_principal(tokens, sessions, secret)) is None

    with sessions.begin() as session:
        session.add(
            ApiToken(
                workspace_id=workspace_id,
                prefix=secret[: len(SECRET_PREFIX) + 4],
                secret_sha256=hash_secret(secret),
                scopes=["events:write"],
                created_at=NOW,
            )
        )
    expected = Principal(workspace_id, frozenset({"events:write"}), token_id=only_token_id(sessions))
    assert asyncio.run(live_principal(tokens, sessions, secret)) == expected


def test_requests_that_miss_a_token_together_share_one_read() -> None:
    tokens = TokenCache(ttl_s=2.0, clock=lambda: 100.0)
    principal = Principal(7, frozenset({"events:write"}), token_id=1)
    reads: list[str] = []

    def loader(answer: Principal | None) -> Callable[[], Awaitable[Principal | None]]:
        async def load() -> Principal | None:
            reads.append("read")
            await asyncio.sleep(0.01)
            return answer

        return load

    async def together(answer: Principal | None) -> list[Principal | None]:
        return await asyncio.gather(*(tokens.read("digest", loader(answer)) for _ in range(10)))

    assert asyncio.run(together(None)) == [None] * 10
    assert len(reads) == 1
    # Unknown is not kept: the next miss reads again, and finds the token that now exists.
    assert asyncio.run(together(principal)) == [principal] * 10
    assert len(reads) == 2
    assert tokens.get("digest") == principal
