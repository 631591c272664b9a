"""What every dialect router shares: its own error envelope, and bodies read as JSON whatever their label."""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel

from api.auth import route_token
from api.bodies import LimitSetting, bounded, preauth_limit
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
    is not in a header reads no more than `limit_before_auth`. /openapi.json declares each of `statuses` in
    `error_model`, the envelope `render_error` writes; "4XX" as well, so FastAPI does not declare its own 422 body,
    which a dialect never sends.
    """

    class DialectRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = bounded(
                super().get_route_handler(),
                token=route_token(self.dependant),
                max_body_bytes=max_body_bytes,
                limit_before_auth=limit_before_auth,
            )

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
