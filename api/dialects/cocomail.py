"""cocomail (seed 000): POST /compat/cocomail/events/trigger with a bare `Authorization: <token>`."""

from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, EmailStr, Field, JsonValue, field_validator

from api.auth import CONTACTS_READ, EVENTS_WRITE, Principal, raw_authorization
from api.dialects.routing import dialect_router
from api.intake import submit
from tripmail.errors import TripmailError
from tripmail.ids import iso_utc
from tripmail.models import Contact, EventType
from tripmail.schemas.trigger import Audience, ContactUpdate, TriggerRequest


class CocomailTrigger(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    email: EmailStr
    identifier: str = Field(min_length=1, max_length=100)
    # The seed's own example sends "true" as a string; pydantic's lax booleans accept both.
    consents_to_emails: bool = Field(default=True, alias="consentsToEmails")
    contact_metadata: dict[str, JsonValue] = Field(default_factory=dict, alias="contactMetadata")
    trigger_metadata: dict[str, JsonValue] = Field(default_factory=dict, alias="triggerMetadata")

    @field_validator("consents_to_emails", mode="before")
    @classmethod
    def _null_is_the_default(cls, value: object) -> object:
        # The seed gives the field a default value, and clients that serialise every field send null for it.
        return True if value is None else value


def to_trigger(body: CocomailTrigger, workspace_id: int) -> TriggerRequest:
    return TriggerRequest(
        workspace_id=workspace_id,
        event=body.identifier,
        audience=Audience(email=body.email),
        contact_update=ContactUpdate(fields=body.contact_metadata, email_consent_if_created=body.consents_to_emails),
        data=body.trigger_metadata,
        create_event_type=False,  # cocomail events are created in its dashboard, never by a trigger
    )


def contact_json(contact: Contact) -> dict[str, Any]:
    return {
        "id": contact.id,
        "email": contact.email,
        "metadata": contact.fields,
        "createdAt": iso_utc(contact.created_at, milliseconds=True),
    }


def event_json(event_type: EventType) -> dict[str, Any]:
    return {
        "id": event_type.uuid,
        "name": event_type.name,
        "identifier": event_type.key,
        "createdAt": iso_utc(event_type.created_at, milliseconds=True),
    }


def render_error(exc: TripmailError) -> JSONResponse:
    # cocomail's SDK turns only a 400 into a readable error, so a body that does not validate is a 400.
    status = 400 if exc.status == 422 else exc.status
    return JSONResponse({"data": None, "error": exc.detail}, status_code=status)


class CocomailError(BaseModel):
    data: None
    error: str


router = dialect_router(
    "cocomail", render_error, error_model=CocomailError, statuses=(400, 401, 403, 404, 413, 429, 503)
)


@router.post("/events/trigger")
def trigger(
    body: CocomailTrigger,
    # The answer shows the stored contact, fields that other callers set included.
    principal: Annotated[Principal, Depends(raw_authorization((EVENTS_WRITE, CONTACTS_READ)))],
    request: Request,
) -> dict[str, Any]:
    """Trigger an event for a contact, creating the contact if needed."""
    submitted = submit(request, to_trigger(body, principal.workspace_id), upsert_contact_now=True)
    assert submitted.contact is not None
    assert submitted.event_type is not None
    return {
        "data": {
            "contact": contact_json(submitted.contact),
            "event": event_json(submitted.event_type),
            "trigger": {"metadata": body.trigger_metadata},
        },
        "error": None,
    }
