"""Request bodies read only up to TRIPMAIL_MAX_BODY_BYTES, and JSON that Python cannot read refused as the client's.

FastAPI reads a body whole, however large, and answers a body that its JSON reader gives up on (nested past the
interpreter's recursion limit, an integer longer than `sys.get_int_max_str_digits()`, bytes that are not UTF-8)
with a bare 400 that names nothing and ignores a dialect's envelope. Every route that takes a body reads it here
first, as FastAPI's documentation does for custom request classes, and the route's own handler then finds it read.
FastAPI's own `max_body_size` is not used: its 413 is plain text, sent in place of whatever the route answers.
"""

import json
import sys
from collections.abc import Callable, Coroutine
from contextlib import aclosing, suppress
from email.message import Message
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

from tripmail.errors import InvalidRequest, PayloadTooLarge

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class BoundedRequest(Request):
    """A request whose body is refused once it passes `limit` bytes: a larger declared length unread."""

    def __init__(self, request: Request, limit: int) -> None:
        super().__init__(request.scope, request.receive)
        self.limit = limit

    def _too_large(self, size: str) -> PayloadTooLarge:
        return PayloadTooLarge(f"the body is {size} bytes; the limit is {self.limit}", field="body")

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.limit:
                raise self._too_large(declared)
            chunks: list[bytes] = []
            size = 0
            async with aclosing(self.stream()) as stream:
                async for chunk in stream:
                    size += len(chunk)
                    if size > self.limit:  # sent in chunks, or longer than declared: read no further
                        raise self._too_large(f"more than {self.limit}")
                    chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body)
            except json.JSONDecodeError:
                raise  # FastAPI's own answer names the character
            except RecursionError as exc:
                raise InvalidRequest("body: JSON nested too deeply to read", field="body") from exc
            except UnicodeDecodeError as exc:
                raise InvalidRequest(f"body: not UTF-8 at byte {exc.start}", field="body") from exc
            except ValueError as exc:
                limit = sys.get_int_max_str_digits()
                raise InvalidRequest(f"body: a number has more than {limit} digits", field="body") from exc
        return self._json


def _is_json(content_type: str | None) -> bool:
    """As FastAPI decides whether to parse a body as JSON."""
    if content_type == "application/json":
        return True
    if not content_type:
        return False
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def bounded(handler: Handler, *, max_body_bytes: int | None = None) -> Handler:
    """`handler`, given the body only once it is within the limit (the api's, or a tighter `max_body_bytes`) and,
    when labelled JSON, readable as JSON."""

    async def bounded_handler(request: Request) -> Response:
        limit = request.app.state.settings.max_body_bytes
        if max_body_bytes is not None:
            limit = min(limit, max_body_bytes)
        request = BoundedRequest(request, limit)
        await request.body()
        if _is_json(request.headers.get("content-type")):
            # A syntax error is left to the handler's own reading, whose answer names the character.
            with suppress(json.JSONDecodeError):
                await request.json()
        return await handler(request)

    return bounded_handler


class BoundedRoute(APIRoute):
    """A route whose handler reads its body through `bounded`."""

    def get_route_handler(self) -> Handler:
        return bounded(super().get_route_handler())
