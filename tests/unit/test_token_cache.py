"""The api keeps a live token's workspace for a moment: a revocation shows within that moment, a new token at once,
and a token revoked by `tripmail token revoke` (its Redis marker) on its next request."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import fakeredis
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.auth import Principal, TokenCache, authenticate, live_principal
from api.ratelimit import REVOCATION_RECHECK_S, RateLimiter, RedisPause, RevocationMarkers, token_key
from tests.support.builders import make_workspace, password_reset_spec
from tripmail.config import Settings
from tripmail.errors import NotFound, Unauthenticated
from tripmail.models import ApiToken, Workspace
from tripmail.setup.tokens import SECRET_PREFIX, create_token, hash_secret, mark_revoked, revoke_tokens, revoked_key

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def acme(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as session:
        return make_workspace(session, password_reset_spec("acme"))


def only_token_id(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return session.scalars(select(ApiToken.id)).one()


def test_a_revoked_token_is_refused_once_its_time_is_up(sessions: sessionmaker[Session]) -> None:
    workspace_id = acme(sessions)
    with sessions.begin() as session:
        secret = create_token(session, session.get_one(Workspace, workspace_id), ["events:write"], now=NOW)
    now = [100.0]
    tokens = TokenCache(ttl_s=2.0, max_entries=100, clock=lambda: now[0])
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
    tokens = TokenCache(ttl_s=2.0, max_entries=100, clock=lambda: 100.0)
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
    tokens = TokenCache(ttl_s=2.0, max_entries=100, clock=lambda: 100.0)
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


def request_to(
    tokens: TokenCache,
    sessions: sessionmaker[Session],
    store: fakeredis.FakeRedis,
    limited: bool,
    clock: Callable[[], float] = time.monotonic,
) -> Request:
    """A request to an app whose state is what create_app's lifespan builds, on fakeredis."""
    app = FastAPI()
    app.state.tokens, app.state.sessions, app.state.redis = tokens, sessions, store
    # One a minute: the budget key a request leaves lives a minute, past the end of the test.
    app.state.redis_pause = RedisPause(clock)
    app.state.revocations = RevocationMarkers(store, app.state.redis_pause, clock)
    app.state.limiter = RateLimiter(store, per_minute=1, burst=10, pause=app.state.redis_pause) if limited else None
    return Request({"type": "http", "app": app, "headers": []})


def new_token(sessions: sessionmaker[Session]) -> str:
    workspace_id = acme(sessions)
    with sessions.begin() as session:
        return create_token(session, session.get_one(Workspace, workspace_id), ["events:write"], now=NOW)


@pytest.mark.parametrize("limited", [True, False], ids=["marker-in-the-limit-script", "marker-alone"])
def test_a_cached_token_revoked_with_its_marker_is_refused_on_its_next_request(
    sessions: sessionmaker[Session], limited: bool
) -> None:
    secret = new_token(sessions)
    store = fakeredis.FakeRedis()
    tokens = TokenCache(ttl_s=2.0, max_entries=100, clock=lambda: 100.0)  # the entry never runs out in this test
    clock = [0.0]
    request = request_to(tokens, sessions, store, limited, clock=lambda: clock[0])
    principal = asyncio.run(authenticate(request, secret, scope="events:write", how="test"))
    assert tokens.get(hash_secret(secret)) == principal
    charged = store.get(token_key(principal.token_id))
    assert (charged is not None) == limited

    with sessions.begin() as session:
        revoke_tokens(session, [principal.token_id], now=NOW)
    mark_revoked(store, [principal.token_id], ttl_s=60)
    # Without a limit the marker is looked up at most every REVOCATION_RECHECK_S per token and process.
    clock[0] += REVOCATION_RECHECK_S
    for _ in range(2):
        with pytest.raises(Unauthenticated, match=r"not valid \(unknown or revoked\)"):
            asyncio.run(authenticate(request, secret, scope="events:write", how="test"))
    assert tokens.get(hash_secret(secret)) is None  # dropped: the next request reads the database
    assert 0 < store.ttl(revoked_key(principal.token_id)) <= 60
    assert store.get(token_key(principal.token_id)) == charged  # a revoked token's requests are not charged


@pytest.mark.parametrize("limited", [True, False], ids=["marker-in-the-limit-script", "marker-alone"])
def test_with_redis_down_a_cached_revoked_token_works_until_its_entry_lapses(
    sessions: sessionmaker[Session], limited: bool
) -> None:
    secret = new_token(sessions)
    server = fakeredis.FakeServer()
    store = fakeredis.FakeRedis(server=server)
    now = [100.0]
    tokens = TokenCache(ttl_s=2.0, max_entries=100, clock=lambda: now[0])
    request = request_to(tokens, sessions, store, limited)
    principal = asyncio.run(authenticate(request, secret, scope="events:write", how="test"))
    with sessions.begin() as session:
        revoke_tokens(session, [principal.token_id], now=NOW)
    mark_revoked(store, [principal.token_id], ttl_s=60)
    server.connected = False
    assert asyncio.run(authenticate(request, secret, scope="events:write", how="test")) == principal  # fail open
    now[0] += 2.1
    with pytest.raises(Unauthenticated):
        asyncio.run(authenticate(request, secret, scope="events:write", how="test"))


def test_revoking_is_all_or_nothing_and_keeps_the_first_time(sessions: sessionmaker[Session]) -> None:
    new_token(sessions)
    token_id = only_token_id(sessions)
    with (
        sessions.begin() as session,
        pytest.raises(NotFound, match=f"^no token with id {token_id + 1};"),
    ):
        revoke_tokens(session, [token_id, token_id + 1], now=NOW)
    with sessions() as session:
        assert session.get_one(ApiToken, token_id).revoked_at is None

    with sessions.begin() as session:
        [first] = revoke_tokens(session, [token_id], now=NOW)
    with sessions.begin() as session:
        [again] = revoke_tokens(session, [token_id, token_id], now=NOW + timedelta(hours=1))
    assert (first.already, first.workspace_key, first.revoked_at.replace(tzinfo=UTC)) == (False, "acme", NOW)
    assert (again.already, again.revoked_at.replace(tzinfo=UTC)) == (True, NOW)


def test_the_marker_outlasts_every_cached_entry() -> None:
    assert Settings(setup_cache_s=2).revoked_marker_s == 60
    assert Settings(setup_cache_s=30).revoked_marker_s == 300


def test_without_a_limit_a_busy_token_is_looked_up_once_per_recheck_interval() -> None:
    store = fakeredis.FakeRedis()
    clock = [0.0]
    markers = RevocationMarkers(store, RedisPause(lambda: clock[0]), lambda: clock[0])
    assert markers.revoked(7) is False
    mark_revoked(store, [7], ttl_s=60)
    clock[0] = REVOCATION_RECHECK_S - 0.001
    assert markers.revoked(7) is False  # not looked up again yet
    clock[0] = REVOCATION_RECHECK_S
    assert markers.revoked(7) is True
    assert markers.revoked(7) is True  # a revoked token is looked up on every request
