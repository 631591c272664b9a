"""Token → workspace, one dependency per header style."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tripmail.errors import Forbidden, Unauthenticated
from tripmail.tokens import find_token


@dataclass(frozen=True)
class Principal:
    workspace_id: int
    scopes: frozenset[str]


_bearer = HTTPBearer(auto_error=False, description="An API token from `tripmail token create`.")


def principal_for_secret(request: Request, secret: str) -> Principal:
    with request.app.state.sessions() as session:
        token = find_token(session, secret)
        if token is None:
            raise Unauthenticated("the token is not valid (unknown or revoked)")
        return Principal(workspace_id=token.workspace_id, scopes=frozenset(token.scopes))


def bearer_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None:
        raise Unauthenticated("send the API token as 'Authorization: Bearer <token>'", field="Authorization")
    return principal_for_secret(request, credentials.credentials)


def bearer_with_scope(scope: str) -> Callable[[Principal], Principal]:
    def dependency(principal: Annotated[Principal, Depends(bearer_principal)]) -> Principal:
        if scope not in principal.scopes:
            raise Forbidden(f"the token lacks the {scope!r} scope", field="Authorization")
        return principal

    return dependency


EventWriter = Annotated[Principal, Depends(bearer_with_scope("events:write"))]
