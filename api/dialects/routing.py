"""What every dialect router shares: its own error envelope, and bodies read as JSON whatever their label."""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute

from api.problems import ErrorRenderer
from tripmail.errors import PayloadTooLarge

_JSON = b"application/json"


def dialect_router(name: str, render_error: ErrorRenderer, *, max_body_bytes: int | None = None) -> APIRouter:
    """A router under /compat/<name> whose every error, parsing included, answers through `render_error`.

    With `max_body_bytes`, a larger body is refused with 413 before it is parsed.
    """

    class DialectRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def dialect_handler(request: Request) -> Response:
                # Set before the body is parsed, so a JSON syntax error is answered in the dialect's shape too.
                request.state.render_error = render_error
                # The platforms' own examples send JSON with `curl -d` and no header, which curl labels
                # application/x-www-form-urlencoded; the platforms read it as JSON, and so does Tripmail.
                headers = [(key, value) for key, value in request.scope["headers"] if key != b"content-type"]
                request.scope["headers"] = [*headers, (b"content-type", _JSON)]
                if max_body_bytes is not None:
                    declared = dict(headers).get(b"content-length", b"0")
                    size = int(declared) if declared.isdigit() else 0
                    if size <= max_body_bytes:
                        size = len(await request.body())  # cached on the request for the handler to parse
                    if size > max_body_bytes:
                        return render_error(
                            PayloadTooLarge(f"the body is {size} bytes; the limit is {max_body_bytes}", field="body")
                        )
                # The headers changed above; this request object has not read them yet, so it sees the new ones.
                return await handler(request)

            return dialect_handler

    return APIRouter(prefix=f"/compat/{name}", tags=[name], route_class=DialectRoute)
