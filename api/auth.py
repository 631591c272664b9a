"""Token → workspace, one dependency per header style the dialects use, each checked before the body is read
(see `RouteToken` and api/bodies.py).

The dependencies are async, so a request whose token was seen in the last `setup_cache_s` seconds is
authenticated on the event loop without a thread hop or a database read; the one Redis round trip that charges
the rate limit and checks for a revocation is made there too.
"""

import asyncio
import base64
import binascii
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, ClassVar

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import APIKeyHeader, APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.lookups import ExpiringCache
from api.ratelimit import charge_token
from tripmail.errors import Forbidden, Unauthenticated
from tripmail.setup.tokens import find_token, hash_secret


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
    request in flight misses it, and under load their reads are a large share of the api's CPU
    (bench/results.md, What the code's shape rests on).
    """

    def __init__(self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(ttl_s, max_entries, clock)
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
_x_api_key = APIKeyHeader(name="x-api-key", auto_error=False)
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


# Where a request keeps the principals its route tokens found (in the ASGI scope, which every Request of it shares).
_PRINCIPALS = "tripmail.principals"


class RouteToken(ABC):
    """How a route's callers send its API token, in a header or the query string: read before the body.

    An instance is the route's FastAPI dependency (the signature of its `__call__` declares the header, for
    /openapi.json), and `bounded` awaits its `principal` before it reads a byte of the body: a request without a
    valid token is refused at the cost of its headers. The principal is kept on the request, so FastAPI's own call
    of the dependency, once the body is read, neither reads nor charges the token again.
    """

    how: ClassVar[str]
    field: ClassVar[str] = "Authorization"

    def __init__(self, scope: Scopes) -> None:
        self.scope = scope

    @abstractmethod
    async def secret(self, request: Request) -> str | None:
        """The token where this route's callers send it; None when they sent none."""

    async def principal(self, request: Request) -> Principal:
        """The principal of the request's token, authenticated (and charged) once per request."""
        known: dict[RouteToken, Principal] = request.scope.setdefault(_PRINCIPALS, {})
        principal = known.get(self)
        if principal is None:
            secret = await self.secret(request)
            principal = await authenticate(request, secret, scope=self.scope, how=self.how, field=self.field)
            known[self] = principal
        return principal


class Bearer(RouteToken):
    """`Authorization: Bearer <token>`."""

    how = "'Authorization: Bearer <token>'"

    async def secret(self, request: Request) -> str | None:
        credentials = await _bearer(request)
        return credentials.credentials if credentials else None

    async def __call__(
        self, request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        return await self.principal(request)


class RawAuthorization(RouteToken):
    """`Authorization: <token>` with no scheme (cocomail); a `Bearer ` prefix is tolerated."""

    how = "'Authorization: <token>'"

    async def secret(self, request: Request) -> str | None:
        header = await _authorization(request)
        return header.removeprefix("Bearer ").strip() if header else None

    async def __call__(self, request: Request, header: Annotated[str | None, Depends(_authorization)]) -> Principal:
        return await self.principal(request)


class XAuthorizationOrBearer(RouteToken):
    """`X-Authorization: <token>` (bunce's own) or `Authorization: Bearer <token>` (what its SDKs send)."""

    how = "'X-Authorization: <token>' or 'Authorization: Bearer <token>'"
    field = "X-Authorization"

    async def secret(self, request: Request) -> str | None:
        header = await _x_authorization(request)
        if header and header.strip():
            return header.strip()
        credentials = await _bearer(request)
        return credentials.credentials if credentials else None

    async def __call__(
        self,
        request: Request,
        header: Annotated[str | None, Depends(_x_authorization)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        return await self.principal(request)


class BearerOrApiKey(RouteToken):
    """`Authorization: Bearer <token>` or `x-api-key: <token>` (emailsendx)."""

    how = "'Authorization: Bearer <token>' or 'x-api-key: <token>'"

    async def secret(self, request: Request) -> str | None:
        credentials = await _bearer(request)
        if credentials:
            return credentials.credentials
        header = await _x_api_key(request)
        return header.strip() if header else None

    async def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        header: Annotated[str | None, Depends(_x_api_key)],
    ) -> Principal:
        return await self.principal(request)


class BearerOrBody(RouteToken):
    """`Authorization: Bearer <token>`, or, without the header, a token the route reads from its body (altcraft).

    Only a header token is checked before the body is read (`bounded` asks `in_header` which applies); the route
    receives None for a body token and authenticates it itself.
    """

    how = "'Authorization: Bearer <token>' or \"token\" in the request body"

    async def secret(self, request: Request) -> str | None:
        credentials = await _bearer(request)
        return credentials.credentials if credentials else None

    async def in_header(self, request: Request) -> bool:
        """Whether this request sent its token in the header."""
        return await self.secret(request) is not None

    async def __call__(
        self, request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal | None:
        return await self.principal(request) if credentials else None


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


class BasicOrBearer(RouteToken):
    """HTTP Basic with the token as password (any user name), or `Authorization: Bearer <token>` (esputnik)."""

    how = "HTTP Basic (the token as password) or Bearer"

    async def secret(self, request: Request) -> str | None:
        return _basic_or_bearer_secret(await _authorization(request))

    async def __call__(self, request: Request, header: Annotated[str | None, Depends(_authorization)]) -> Principal:
        return await self.principal(request)


class BasicBearerOrQuery(RouteToken):
    """What a provider's webhook can send: HTTP Basic with the token as password (the credentials written into the
    webhook URL), Bearer, or the `token` query parameter."""

    how = "HTTP Basic (the token as password), Bearer, or ?token=<token>"

    async def secret(self, request: Request) -> str | None:
        return _basic_or_bearer_secret(await _authorization(request)) or await _token_query(request)

    async def __call__(
        self,
        request: Request,
        header: Annotated[str | None, Depends(_authorization)],
        query: Annotated[str | None, Depends(_token_query)],
    ) -> Principal:
        return await self.principal(request)


def bearer(scope: Scopes) -> Bearer:
    return Bearer(scope)


def raw_authorization(scope: Scopes) -> RawAuthorization:
    return RawAuthorization(scope)


def x_authorization_or_bearer(scope: Scopes) -> XAuthorizationOrBearer:
    return XAuthorizationOrBearer(scope)


def bearer_or_api_key(scope: Scopes) -> BearerOrApiKey:
    return BearerOrApiKey(scope)


def bearer_or_body(scope: Scopes) -> BearerOrBody:
    return BearerOrBody(scope)


def basic_or_bearer(scope: Scopes) -> BasicOrBearer:
    return BasicOrBearer(scope)


def basic_bearer_or_query(scope: Scopes) -> BasicBearerOrQuery:
    return BasicBearerOrQuery(scope)


def route_token(dependant: Dependant) -> RouteToken | None:
    """The token the route whose dependencies these are authenticates with, if it takes one outside its body."""
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, RouteToken):
            return dependency.call
        found = route_token(dependency)
        if found is not None:
            return found
    return None


EVENTS_WRITE = "events:write"
EVENTS_READ = "events:read"
# Any answer that shows a contact's stored email or fields needs it, next to the route's own scope.
CONTACTS_READ = "contacts:read"
CONTACTS_WRITE = "contacts:write"
EVENT_WRITER = bearer(EVENTS_WRITE)
EventWriter = Annotated[Principal, Depends(EVENT_WRITER)]
