"""Errors as RFC 9457 problem+json, or in a dialect's own envelope when the route speaks one."""

import re
from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.intake import count_refusal
from tripmail.errors import (
    FieldError,
    InvalidRequest,
    KeyReused,
    MethodNotAllowed,
    NotFound,
    RateLimited,
    TripmailError,
    Unavailable,
)

ErrorRenderer = Callable[[TripmailError], Response]

# What `problem` and `on_http_error` write, declared inline: FastAPI would file a model's schema under the route's
# own media type (application/json), which these answers never carry.
PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "field": {"type": "string", "description": "The field, header or path segment at fault."},
        "errors": {
            "type": "array",
            "description": "Every field at fault, each with its reason.",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
        "first_event_id": {"type": "string", "description": "key-reused: the event that first used the key."},
    },
}

REFUSALS = {
    400: "The request does not validate; the answer names each field.",
    401: "No token, or one that is unknown or revoked.",
    403: "The token lacks the route's scope.",
    404: "What the request names is not in this workspace.",
    409: "The campaign is paused or a draft; or the event's key was used by an event with other content.",
    413: "The body is over the size limit (or a batch over the token's burst).",
    422: "The request does not validate; the answer names each field.",
    429: "The token's rate limit; Retry-After says when the request would fit.",
    503: "The queue (Redis) did not answer; nothing was accepted.",
}


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route whose refusals are problem+json, one per status it can answer."""
    content = {"application/problem+json": {"schema": PROBLEM_SCHEMA}}
    return {status: {"description": REFUSALS[status], "content": content} for status in statuses}


def problem(exc: TripmailError) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{exc.code}",
        "title": exc.code.replace("-", " ").capitalize(),
        "status": exc.status,
        "detail": exc.detail,
    }
    if exc.field is not None:
        body["field"] = exc.field
    if exc.errors:
        body["errors"] = exc.errors
    if isinstance(exc, KeyReused):
        body["first_event_id"] = exc.first_event_id
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(body, status_code=exc.status, media_type="application/problem+json", headers=headers)


def _render(request: Request, exc: TripmailError) -> Response:
    count_refusal(request, exc)
    renderer: ErrorRenderer | None = getattr(request.state, "render_error", None)
    response = renderer(exc) if renderer is not None else problem(exc)
    if isinstance(exc, RateLimited):
        # Here rather than in each renderer, so every dialect's envelope carries it too.
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


async def on_tripmail_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TripmailError)
    return _render(request, exc)


# How soon a client may try again after the database was unreachable: a restart or failover takes seconds.
DATABASE_RETRY_AFTER_S = 5


async def on_database_error(request: Request, exc: Exception) -> Response:
    """The database unreachable (or SQLite's write lock held past its wait) while answering: 503 in the route's
    envelope, with Retry-After, rather than a bare 500; nothing was accepted, so sending again is safe."""
    response = _render(request, Unavailable("the database is not reachable; nothing was accepted, retry later"))
    response.headers["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
    return response


def _field_path(location: tuple[int | str, ...]) -> str:
    parts = location[1:] if location and location[0] in ("body", "query", "path", "header") else location
    return ".".join(str(part) for part in parts) or str(location[0] if location else "body")


def _field_error(error: dict[str, Any]) -> FieldError:
    if error["type"] == "json_invalid":
        position = error["loc"][-1]
        reason = error.get("ctx", {}).get("error", "")
        return FieldError(field="body", message=f"not valid JSON at character {position}: {reason}".rstrip(": "))
    return FieldError(field=_field_path(tuple(error["loc"])), message=error["msg"])


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    return _render(request, InvalidRequest.listing([_field_error(error) for error in exc.errors()]))


async def on_model_error(request: Request, exc: Exception) -> Response:
    """A canonical model refused what a route built from the client's input: the client's error, named."""
    assert isinstance(exc, ValidationError)
    errors = [FieldError(field=".".join(str(p) for p in e["loc"]) or "body", message=e["msg"]) for e in exc.errors()]
    return _render(request, InvalidRequest.listing(errors))


def _routing_refusal(request: Request, status: int, allowed: str) -> TripmailError | None:
    """The router's 404 or 405 as a refusal a dialect can render, naming the path or the methods it serves."""
    if status == 404:
        return NotFound(f"no route {request.method} {request.url.path}", field="path")
    if status == 405:
        return MethodNotAllowed(f"{request.url.path} does not serve {request.method}; it serves {allowed}")
    return None


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    # Keep the framework's headers (405's Allow, for one).
    headers = dict(exc.headers or {})
    if exc.status_code == 405 and "Allow" in headers:
        headers["Allow"] = _allowed_methods(request, headers["Allow"])
    refusal = _routing_refusal(request, exc.status_code, headers.get("Allow", ""))
    if refusal is not None and getattr(request.state, "render_error", None) is not None:
        response = _render(request, refusal)
        response.headers.update(headers)
        return response
    body = {"type": "about:blank", "title": str(exc.detail), "status": exc.status_code, "detail": str(exc.detail)}
    return JSONResponse(body, status_code=exc.status_code, media_type="application/problem+json", headers=headers)


def _allowed_methods(request: Request, framework: str) -> str:
    """Every method a route serves at this path: the router's 405 names only the first such route's (POST for
    /v1/events, which the history also serves with GET). Read from the OpenAPI paths, the app's public map."""
    methods = {method.strip() for method in framework.split(",") if method.strip()}
    for template, operations in request.app.openapi()["paths"].items():
        pattern = re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, request.url.path):
            methods |= {method.upper() for method in operations}
    return ", ".join(sorted(methods))
