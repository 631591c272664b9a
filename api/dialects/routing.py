"""What every dialect router shares: its own error envelope, and bodies read as JSON whatever their label."""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from api.auth import BearerOrBody, RouteToken, route_token
from api.bodies import Handler, LimitSetting, bounded, preauth_limit
from api.problems import REFUSALS, ErrorRenderer

_JSON = b"application/json"


def dialect_router(
    name: str,
    render_error: ErrorRenderer,
    *,
    error_model: type[BaseModel],
    statuses: tuple[int, ...],
    max_body_bytes: int | None = None,
    limit_before_auth: LimitSetting = preauth_limit,
) -> APIRouter:
    """A router under /compat/<name> whose every error, parsing included, answers through `render_error`.

    Every body is read `bounded`: a route's header token is checked before it, and one over the api's limit, or
    over a dialect's tighter `max_body_bytes`, is refused with 413 before it is parsed; a route whose credential
    is not in a header (for a `BearerOrBody` route, not in it this time) reads no more than `limit_before_auth`.
    /openapi.json declares each of `statuses` in `error_model`, the envelope `render_error` writes; "4XX" as well,
    so FastAPI does not declare its own 422 body, which a dialect never sends. Its routes and any path under its
    prefix answer 404 and 405 in that envelope too (see `api.app.serve_both_slash_forms`).
    """

    class DialectRoute(APIRoute):
        async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
            # Before the method check, so a 405 is answered in the dialect's shape too.
            scope.setdefault("state", {})["render_error"] = render_error
            await super().handle(scope, receive, send)

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            route = super().get_route_handler()

            def bounded_by(token: RouteToken | None) -> Handler:
                return bounded(route, token=token, max_body_bytes=max_body_bytes, limit_before_auth=limit_before_auth)

            token = route_token(self.dependant)
            if isinstance(token, BearerOrBody):
                handler = _header_or_body_token(bounded_by(token), bounded_by(None), token)
            else:
                handler = bounded_by(token)

            async def dialect_handler(request: Request) -> Response:
                # Set before the body is read, so a refusal of it is answered in the dialect's shape too.
                request.state.render_error = render_error
                # The platforms' own examples send JSON with `curl -d` and no header, which curl labels
                # application/x-www-form-urlencoded; the platforms read it as JSON, and so does Tripmail.
                headers = [(key, value) for key, value in request.scope["headers"] if key != b"content-type"]
                request.scope["headers"] = [*headers, (b"content-type", _JSON)]
                return await handler(request)

            return dialect_handler

    responses: dict[int | str, dict[str, Any]] = {
        status: {"model": error_model, "description": REFUSALS[status]} for status in statuses
    }
    responses["4XX"] = {"model": error_model, "description": f"Any refusal, in {name}'s envelope."}
    return APIRouter(prefix=f"/compat/{name}", tags=[name], route_class=DialectRoute, responses=responses)


def _header_or_body_token(in_header: Handler, in_body: Handler, token: BearerOrBody) -> Handler:
    """`in_header` when the request sends its token in the header, checked before the body is read; else
    `in_body`, which reads a body whose sender is not known yet."""

    async def handler(request: Request) -> Response:
        return await (in_header if await token.in_header(request) else in_body)(request)

    return handler
