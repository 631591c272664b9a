"""What every dialect router shares: bodies read as JSON whatever their Content-Type says."""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

_JSON = b"application/json"


class LenientJsonRoute(APIRoute):
    """Reads a request body as JSON even when it is labelled otherwise.

    The platforms' own examples send JSON with `curl -d` and no header, which curl labels
    application/x-www-form-urlencoded; the platforms accept that, so Tripmail must too.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def lenient_handler(request: Request) -> Response:
            headers = [(name, value) for name, value in request.scope["headers"] if name != b"content-type"]
            request.scope["headers"] = [*headers, (b"content-type", _JSON)]
            return await handler(Request(request.scope, request.receive))

        return lenient_handler
