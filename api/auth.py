"""Token → workspace, one dependency per header style the dialects use.

The dependencies are async, so a request whose token was seen in the last `setup_cache_s` seconds is
authenticated on the event loop without a thread hop or a database read; the one Redis round trip that charges
the rate limit and checks for a revocation is made there too.
"""

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.lookups import ExpiringCache
from api.ratelimit import charge_token
from tripmail.errors import Forbidden, Unauthenticated
from tripmail.tokens import find_token, hash_secret


@dataclass(frozen=True)
class Principal:
    workspace_id: int
    scopes: frozenset[str]
    token_id: int


class TokenCache(ExpiringCache[str, Principal]):
    """Live tokens, keyed by the SHA-256 of their secret as stored.

    Only live tokens are kept: an unknown secret reads the database each time, so a token created a moment ago
    works at once and random guesses cannot grow the cache. A token revoked with `tripmail token revoke` is refused
    from its next request all the same: the command also leaves a marker in Redis, which `authenticate` checks in
    the round trip it makes anyway (the rate limit's), and drops the entry. With Redis unreachable the check fails
    open, and the token keeps working in this process until its entry expires, at most `setup_cache_s` seconds
    (2 by default), as it does when revoked_at is set by hand.

    Requests that miss one token at the same time share one read: when a busy token's entry expires, every
    request in flight misses it, and at 64 connections their reads were an eighth of the api's CPU.
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ttl_s, clock)
        self._reads: dict[str, asyncio.Task[Principal | None]] = {}

    async def read(self, digest: str, load: Callable[[], Awaitable[Principal | None]]) -> Principal | None:
        """What `load()` reads for this digest, kept when it is a live token; joins a read already under way."""
        reading = self._reads.get(digest)
        if reading is None:
            reading = asyncio.create_task(self._read_and_keep(digest, load))
            self._reads[digest] = reading
        # A request that goes away must not cancel the read the others wait for.
        return await asyncio.shield(reading)

    async def _read_and_keep(self, digest: str, load: Callable[[], Awaitable[Principal | None]]) -> Principal | None:
        try:
            principal = await load()
        finally:
            del self._reads[digest]
        if principal is not None:
            self.put(digest, principal)
        return principal


_bearer = HTTPBearer(auto_error=False, description="An API token from `tripmail token create`.")
_authorization = APIKeyHeader(name="Authorization", auto_error=False, scheme_name="AuthorizationToken")
_x_authorization = APIKeyHeader(name="X-Authorization", auto_error=False)
_token_query = APIKeyQuery(
    name="token", auto_error=False, description="An API token, for callers that can set no header (provider webhooks)."
)


def find_principal(sessions: sessionmaker[Session], secret: str) -> Principal | None:
    """The workspace and scopes of the live token whose secret this is, read from the database."""
    with sessions() as session:
        token = find_token(session, secret)
        return (
            None
            if token is None
            else Principal(workspace_id=token.workspace_id, scopes=frozenset(token.scopes), token_id=token.id)
        )


async def live_principal(tokens: TokenCache, sessions: sessionmaker[Session], secret: str) -> Principal | None:
    """The workspace and scopes of a live token: kept from the last `setup_cache_s` seconds, else read."""
    digest = hash_secret(secret)
    principal = tokens.get(digest)
    if principal is None:
        # A miss reads the database in the threadpool, so a stream of unknown tokens never stalls the loop.
        principal = await tokens.read(digest, lambda: run_in_threadpool(find_principal, sessions, secret))
    return principal


Scopes = str | tuple[str, ...]


async def authenticate(
    request: Request, secret: str | None, *, scope: Scopes, how: str, field: str = "Authorization"
) -> Principal:
    """The workspace of a live token that carries `scope` (each of them, when several), charged one request; `how`
    and `field` tell the caller where the token goes."""
    if not secret:
        raise Unauthenticated(f"send the API token as {how}", field=field)
    principal = await live_principal(request.app.state.tokens, request.app.state.sessions, secret)
    # Before the scope check: a token that floods with the wrong scope is limited as well. The same round trip
    # tells whether the token was revoked since this process cached it.
    if principal is not None and charge_token(request, principal.token_id):
        request.app.state.tokens.drop(hash_secret(secret))
        principal = None
    if principal is None:
        raise Unauthenticated("the token is not valid (unknown or revoked)", field=field)
    lacking = [name for name in ((scope,) if isinstance(scope, str) else scope) if name not in principal.scopes]
    if lacking:
        plural = "s" if len(lacking) > 1 else ""
        raise Forbidden(f"the token lacks the {' and '.join(map(repr, lacking))} scope{plural}", field=field)
    return principal


Dependency = Callable[..., Awaitable[Principal]]


async def _bearer_principal(
    request: Request, credentials: HTTPAuthorizationCredentials | None, scope: Scopes
) -> Principal:
    secret = credentials.credentials if credentials else None
    return await authenticate(request, secret, scope=scope, how="'Authorization: Bearer <token>'")


def bearer(scope: Scopes) -> Dependency:
    """`Authorization: Bearer <token>`."""

    async def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        return await _bearer_principal(request, credentials, scope)

    return dependency


async def bearer_principal(request: Request, scope: Scopes) -> Principal:
    """What `bearer(scope)` answers, for a route that authenticates without FastAPI's dependency machinery."""
    return await _bearer_principal(request, await _bearer(request), scope)


def raw_authorization(scope: Scopes) -> Dependency:
    """`Authorization: <token>` with no scheme (cocomail); a `Bearer ` prefix is tolerated."""

    async def dependency(request: Request, header: Annotated[str | None, Depends(_authorization)]) -> Principal:
        secret = header.removeprefix("Bearer ").strip() if header else None
        return await authenticate(request, secret, scope=scope, how="'Authorization: <token>'")

    return dependency


def x_authorization(scope: Scopes) -> Dependency:
    """`X-Authorization: <token>` (bunce)."""

    async def dependency(request: Request, header: Annotated[str | None, Depends(_x_authorization)]) -> Principal:
        secret = header.strip() if header else None
        return await authenticate(
            request, secret, scope=scope, how="'X-Authorization: <token>'", field="X-Authorization"
        )

    return dependency


def _basic_or_bearer_secret(header: str | None) -> str | None:
    """The token of `Authorization: Bearer <token>`, or the password of `Authorization: Basic ...`."""
    scheme, _, value = (header or "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return None
    return None


def basic_or_bearer(scope: Scopes) -> Dependency:
    """HTTP Basic with the token as password (any user name), or `Authorization: Bearer <token>` (esputnik)."""

    async def dependency(request: Request, header: Annotated[str | None, Depends(_authorization)]) -> Principal:
        secret = _basic_or_bearer_secret(header)
        return await authenticate(request, secret, scope=scope, how="HTTP Basic (the token as password) or Bearer")

    return dependency


def basic_bearer_or_query(scope: Scopes) -> Dependency:
    """What a provider's webhook can send: HTTP Basic with the token as password (the credentials written into the
    webhook URL), Bearer, or the `token` query parameter."""

    async def dependency(
        request: Request,
        header: Annotated[str | None, Depends(_authorization)],
        query: Annotated[str | None, Depends(_token_query)],
    ) -> Principal:
        secret = _basic_or_bearer_secret(header) or query
        return await authenticate(
            request, secret, scope=scope, how="HTTP Basic (the token as password), Bearer, or ?token=<token>"
        )

    return dependency


EVENTS_WRITE = "events:write"
EVENTS_READ = "events:read"
# Any answer that shows a contact's stored email or fields needs it, next to the route's own scope.
CONTACTS_READ = "contacts:read"
CONTACTS_WRITE = "contacts:write"
EventWriter = Annotated[Principal, Depends(bearer(EVENTS_WRITE))]
