"""Request bodies read only once their sender is authenticated and within a limit, and JSON that Python cannot read
refused as the client's.

FastAPI reads a body whole, however large, and answers a body that its JSON reader gives up on (nested past the
interpreter's recursion limit, an integer longer than `sys.get_int_max_str_digits()`, bytes that are not UTF-8)
with a bare 400 that names nothing and ignores a dialect's envelope. Every route that takes a body reads it here
first, as FastAPI's documentation does for custom request classes, and the route's own handler then finds it read.
FastAPI's own `max_body_size` is not used: its 413 is plain text, sent in place of whatever the route answers.

FastAPI also reads the body before it solves any dependency, the token's included: anyone could make the api read
and parse 16 MiB. A route whose token comes in a header or the query string (an `api.auth.RouteToken`) is
authenticated here before a byte of its body is read; one whose credential is in its body or checked only later
(altcraft, an unsubscribe link) reads at most a small limit of its own (TRIPMAIL_PREAUTH_MAX_BODY_BYTES).
"""

import json
import sys
from collections.abc import Callable, Coroutine
from contextlib import aclosing, suppress
from email.message import Message
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from api.auth import RouteToken, route_token
from tripmail.config import Settings
from tripmail.errors import InvalidRequest, PayloadTooLarge

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
LimitSetting = Callable[[Settings], int]

# A body above this is parsed in the threadpool. Below it json.loads is quick whatever the shape, less than the
# thread hop is worth; above it the loop would stall for every request in flight, longer the larger the body
# (bench/results.md, What the code's shape rests on).
PARSE_IN_THREAD_BYTES = 64 * 1024


def _parse(body: bytes) -> Any:
    """`json.loads`, with what Python cannot read refused as the client's, naming why."""
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise  # FastAPI's own answer names the character
    except RecursionError as exc:
        raise InvalidRequest("body: JSON nested too deeply to read", field="body") from exc
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"body: not UTF-8 at byte {exc.start}", field="body") from exc
    except ValueError as exc:
        limit = sys.get_int_max_str_digits()
        raise InvalidRequest(f"body: a number has more than {limit} digits", field="body") from exc


class BoundedRequest(Request):
    """A request whose body is refused once it passes `limit` bytes: a larger declared length unread."""

    def __init__(self, request: Request, limit: int, why: str = "") -> None:
        super().__init__(request.scope, request.receive)
        self.limit = limit
        self.why = why

    def _too_large(self, size: str) -> PayloadTooLarge:
        return PayloadTooLarge(f"the body is {size} bytes; the limit is {self.limit}{self.why}", field="body")

    def refuse_declared_excess(self) -> None:
        """Refuse a body whose declared length is over the limit, before reading any of it."""
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            raise self._too_large(declared)

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            self.refuse_declared_excess()
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
            self._json = _parse(body) if len(body) <= PARSE_IN_THREAD_BYTES else await run_in_threadpool(_parse, body)
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


def preauth_limit(settings: Settings) -> int:
    return settings.preauth_max_body_bytes


def bounded(
    handler: Handler,
    *,
    token: RouteToken | None,
    max_body_bytes: int | None = None,
    limit_before_auth: LimitSetting = preauth_limit,
) -> Handler:
    """`handler`, given the body only once the route's `token` authenticates (before any of the body is read) and
    the body is within the limit (the api's, or a tighter `max_body_bytes`; without a `token`, whoever sent it is
    not known yet and `limit_before_auth` applies too) and, when labelled JSON, readable as JSON."""

    async def bounded_handler(request: Request) -> Response:
        settings: Settings = request.app.state.settings
        limit = settings.max_body_bytes
        if max_body_bytes is not None:
            limit = min(limit, max_body_bytes)
        why = ""
        if token is None and limit_before_auth(settings) < limit:
            limit = limit_before_auth(settings)
            why = ", for a body read before the request is authenticated"
        request = BoundedRequest(request, limit, why)
        # Free to check: a client told its body is too large learns it before it sends the body, token or not.
        request.refuse_declared_excess()
        if token is not None:
            await token.principal(request)
        await request.body()
        if _is_json(request.headers.get("content-type")):
            # A syntax error is left to the handler's own reading, whose answer names the character.
            with suppress(json.JSONDecodeError):
                await request.json()
        return await handler(request)

    return bounded_handler


class BoundedRoute(APIRoute):
    """A route whose handler reads its body through `bounded`, authenticated first when it takes a `RouteToken`."""

    def get_route_handler(self) -> Handler:
        return bounded(super().get_route_handler(), token=route_token(self.dependant))
