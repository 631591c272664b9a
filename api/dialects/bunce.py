"""bunce (seed 003): POST /compat/bunce/v1/events/trigger with `X-Authorization: <token>` (or Bearer)."""

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, EmailStr, Field, JsonValue

from api.auth import Principal, x_authorization_or_bearer
from api.dialects.routing import dialect_router
from api.intake import submit
from tripmail.contacts.fields import coerce_field_value
from tripmail.errors import FieldError, InvalidRequest, TripmailError, UnknownEventType
from tripmail.ingest.event_types import find_event_type_by_uuid
from tripmail.models import EventType
from tripmail.schemas.trigger import Audience, TriggerRequest

# The one timestamp form bunce accepts; a timestamp param in any other form is skipped, not refused.
_BUNCE_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


class BuncePayload(BaseModel):
    model_config = ConfigDict(extra="allow")

    email: EmailStr


class BunceTrigger(BaseModel):
    event_id: str
    payload: BuncePayload


def _is_bunce_timestamp(value: JsonValue) -> bool:
    if not isinstance(value, str) or not _BUNCE_TIMESTAMP.match(value):
        return False
    try:
        datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return False
    return True


def payload_data(payload: BuncePayload, params: dict[str, str]) -> dict[str, JsonValue]:
    """The payload's params for templates, checked against the event type's declared params."""
    given: dict[str, JsonValue] = dict(payload.model_extra or {})
    data: dict[str, JsonValue] = {}
    errors: list[FieldError] = []
    for name, value in given.items():
        declared = params.get(name)
        if declared is None:
            data[name] = value
        elif declared == "timestamp":
            if _is_bunce_timestamp(value):
                data[name] = value
        else:
            try:
                data[name] = coerce_field_value(declared, value)
            except ValueError as exc:
                errors.append(FieldError(field=f"payload.{name}", message=str(exc)))
    errors += [
        FieldError(field=f"payload.{name}", message=f"the event declares {name!r} ({kind}); the payload lacks it")
        for name, kind in params.items()
        if name not in given
    ]
    if errors:
        raise InvalidRequest.listing(errors)
    return data


def to_trigger(body: BunceTrigger, workspace_id: int, event_type: EventType) -> TriggerRequest:
    return TriggerRequest(
        workspace_id=workspace_id,
        event=event_type.key,
        audience=Audience(email=body.payload.email),
        data=payload_data(body.payload, event_type.params),
        create_event_type=False,
    )


def render_error(exc: TripmailError) -> JSONResponse:
    # bunce answers every parameter error with 422 and an error object naming the field; a path it does not
    # serve is still 404.
    status = 422 if exc.status in (400, 422) or isinstance(exc, UnknownEventType) else exc.status
    errors = exc.errors or [FieldError(field=exc.field or "request", message=exc.detail)]
    return JSONResponse(
        {"success": False, "data": None, "message": exc.detail, "error": {e["field"]: e["message"] for e in errors}},
        status_code=status,
    )


class BunceError(BaseModel):
    success: Literal[False]
    data: None
    message: str
    error: dict[str, str] = Field(description="The message for each field at fault.")


router = dialect_router("bunce", render_error, error_model=BunceError, statuses=(401, 403, 413, 422, 429, 503))


@router.post("/v1/events/trigger")
def trigger(
    body: BunceTrigger,
    principal: Annotated[Principal, Depends(x_authorization_or_bearer("events:write"))],
    request: Request,
) -> dict[str, Any]:
    """Trigger an event, named by its uuid, for the customer in payload.email."""
    with request.app.state.sessions() as session:
        event_type = find_event_type_by_uuid(session, principal.workspace_id, body.event_id)
    if event_type is None:
        raise InvalidRequest(f"no event with id {body.event_id}", field="event_id")
    submit(request, to_trigger(body, principal.workspace_id, event_type))
    return {"success": True, "data": True, "message": "Event successfully triggered"}
