"""Token → workspace, one dependency per header style the dialects use."""

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from tripmail.errors import Forbidden, Unauthenticated
from tripmail.tokens import find_token


@dataclass(frozen=True)
class Principal:
    workspace_id: int
    scopes: frozenset[str]


_bearer = HTTPBearer(auto_error=False, description="An API token from `tripmail token create`.")
_authorization = APIKeyHeader(name="Authorization", auto_error=False, scheme_name="AuthorizationToken")
_x_authorization = APIKeyHeader(name="X-Authorization", auto_error=False)


def authenticate(
    request: Request, secret: str | None, *, scope: str, how: str, field: str = "Authorization"
) -> Principal:
    """The workspace of a live token that carries `scope`; `how` and `field` tell the caller where it goes."""
    if not secret:
        raise Unauthenticated(f"send the API token as {how}", field=field)
    with request.app.state.sessions() as session:
        token = find_token(session, secret)
        if token is None:
            raise Unauthenticated("the token is not valid (unknown or revoked)", field=field)
        principal = Principal(workspace_id=token.workspace_id, scopes=frozenset(token.scopes))
    if scope not in principal.scopes:
        raise Forbidden(f"the token lacks the {scope!r} scope", field=field)
    return principal


def bearer(scope: str) -> Callable[..., Principal]:
    """`Authorization: Bearer <token>`."""

    def dependency(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        secret = credentials.credentials if credentials else None
        return authenticate(request, secret, scope=scope, how="'Authorization: Bearer <token>'")

    return dependency


def raw_authorization(scope: str) -> Callable[..., Principal]:
    """`Authorization: <token>` with no scheme (cocomail); a `Bearer ` prefix is tolerated."""

    def dependency(request: Request, header: Annotated[str | None, Depends(_authorization)]) -> Principal:
        secret = header.removeprefix("Bearer ").strip() if header else None
        return authenticate(request, secret, scope=scope, how="'Authorization: <token>'")

    return dependency


def x_authorization(scope: str) -> Callable[..., Principal]:
    """`X-Authorization: <token>` (bunce)."""

    def dependency(request: Request, header: Annotated[str | None, Depends(_x_authorization)]) -> Principal:
        secret = header.strip() if header else None
        return authenticate(request, secret, scope=scope, how="'X-Authorization: <token>'", field="X-Authorization")

    return dependency


def basic_or_bearer(scope: str) -> Callable[..., Principal]:
    """HTTP Basic with the token as password (any user name), or `Authorization: Bearer <token>` (esputnik)."""

    def dependency(request: Request, header: Annotated[str | None, Depends(_authorization)]) -> Principal:
        scheme, _, value = (header or "").strip().partition(" ")
        secret: str | None = None
        if scheme.lower() == "bearer":
            secret = value.strip()
        elif scheme.lower() == "basic":
            try:
                secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                secret = None
        return authenticate(request, secret, scope=scope, how="HTTP Basic (the token as password) or Bearer")

    return dependency


EventWriter = Annotated[Principal, Depends(bearer("events:write"))]
