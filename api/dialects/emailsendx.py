"""emailsendx (seed 004): contact upsert (contacts:write and contacts:read) and named events for a contact
(events:write); the token as `Authorization: Bearer <token>` or `x-api-key: <token>`."""

import json
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, EmailStr, Field, JsonValue, field_validator

from api.auth import CONTACTS_READ, CONTACTS_WRITE, EVENTS_WRITE, Principal, bearer_or_api_key
from api.dialects.routing import dialect_router
from api.intake import submit
from tripmail.contacts.audience import field_types
from tripmail.contacts.fields import typed_contact_fields
from tripmail.contacts.store import upsert_contact
from tripmail.errors import TripmailError
from tripmail.ids import iso_utc, utcnow
from tripmail.models import Contact
from tripmail.schemas.trigger import Audience, ContactUpdate, TriggerRequest

MAX_DATA_BYTES = 16 * 1024

# The upsert's answer shows the stored contact, metadata that other callers set included.
ContactUpserter = Annotated[Principal, Depends(bearer_or_api_key((CONTACTS_WRITE, CONTACTS_READ)))]
EventWriter = Annotated[Principal, Depends(bearer_or_api_key(EVENTS_WRITE))]


class EmailsendxContact(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    email: EmailStr
    first_name: str | None = Field(default=None, alias="firstName", max_length=200)
    last_name: str | None = Field(default=None, alias="lastName", max_length=200)
    metadata: dict[str, JsonValue] = Field(default_factory=dict)


class EmailsendxEvent(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    data: JsonValue = Field(default_factory=dict)

    @field_validator("data")
    @classmethod
    def _object_within_limit(cls, data: JsonValue) -> JsonValue:
        if data is None:  # the seed calls `data` optional, and clients that send every field send null for it
            return {}
        if not isinstance(data, dict):
            raise ValueError(f"must be a JSON object, not {type(data).__name__}")
        size = len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())
        if size > MAX_DATA_BYTES:
            raise ValueError(f"is {size} bytes; the limit is {MAX_DATA_BYTES} (16 KB)")
        return data


def contact_fields(body: EmailsendxContact) -> dict[str, JsonValue]:
    names = {"firstName": body.first_name, "lastName": body.last_name}
    return body.metadata | {name: value for name, value in names.items() if value is not None}


def to_trigger(body: EmailsendxEvent, workspace_id: int, contact_id: str) -> TriggerRequest:
    assert isinstance(body.data, dict)
    return TriggerRequest(
        workspace_id=workspace_id, event=body.name, audience=Audience(contact_id=contact_id), data=body.data
    )


def contact_json(contact: Contact) -> dict[str, Any]:
    return {
        "id": contact.id,
        "email": contact.email,
        "firstName": contact.fields.get("firstName"),
        "lastName": contact.fields.get("lastName"),
        "metadata": {k: v for k, v in contact.fields.items() if k not in ("firstName", "lastName")},
        "createdAt": iso_utc(contact.created_at),
        "updatedAt": iso_utc(contact.updated_at),
    }


def render_error(exc: TripmailError) -> JSONResponse:
    # The seed's clients read `error` as the message itself; the message names each field at fault.
    status = 400 if exc.status == 422 else exc.status
    return JSONResponse({"error": exc.detail}, status_code=status)


class EmailsendxError(BaseModel):
    error: str


router = dialect_router(
    "emailsendx", render_error, error_model=EmailsendxError, statuses=(400, 401, 403, 404, 413, 429, 503)
)


@router.post("/api/v1/contacts")
def upsert(body: EmailsendxContact, principal: ContactUpserter, request: Request) -> dict[str, Any]:
    """Create the contact or update it by email; metadata keys are merged (the first step of emailsendx's guide)."""
    with request.app.state.sessions.begin() as session:
        fields = typed_contact_fields(field_types(session, principal.workspace_id), contact_fields(body), "metadata")
        contact = upsert_contact(
            session, principal.workspace_id, Audience(email=body.email), ContactUpdate(fields=fields), now=utcnow()
        )
        return {"data": contact_json(contact)}


@router.post("/api/v1/contacts/{contact_id}/events")
def fire_event(contact_id: str, body: EmailsendxEvent, principal: EventWriter, request: Request) -> dict[str, Any]:
    """Fire a named event for a contact; every active automation whose trigger matches it runs."""
    submitted = submit(request, to_trigger(body, principal.workspace_id, contact_id))
    return {
        "data": {
            "contactId": contact_id,
            "eventName": body.name,
            "matchingAutomations": submitted.accepted.matching_automations,
            "firedAt": iso_utc(utcnow()),
        }
    }
