"""Tripmail's own API: POST /v1/events."""

from typing import Self

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, EmailStr, Field, JsonValue, model_validator

from api.auth import EventWriter
from api.intake import submit
from tripmail.schemas.accepted import Accepted
from tripmail.schemas.trigger import Audience, ContactUpdate, TriggerRequest

router = APIRouter(tags=["native"])


class NativeContact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr | None = None
    phone: str | None = Field(default=None, max_length=32)
    external_id: str | None = Field(default=None, max_length=300)
    fields: dict[str, JsonValue] = Field(default_factory=dict, description="Stored on the contact (merged).")
    email_consent: bool | None = Field(
        default=None, description="Marketing email consent; transactional mail ignores it."
    )

    @model_validator(mode="after")
    def _names_someone(self) -> Self:
        if self.email is None and self.phone is None and self.external_id is None:
            raise ValueError("give at least one of email, phone, external_id")
        return self


class NativeEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event: str = Field(min_length=1, max_length=100, description="Event-type key, matched case-insensitively.")
    key: str | None = Field(
        default=None,
        max_length=300,
        description="Idempotency key: a repeat inside the dedupe window sends nothing.",
    )
    contact: NativeContact
    data: dict[str, JsonValue] = Field(
        default_factory=dict, description="For templates only; never stored on the contact."
    )


def to_trigger(body: NativeEvent, workspace_id: int) -> TriggerRequest:
    return TriggerRequest(
        workspace_id=workspace_id,
        event=body.event,
        key=body.key,
        audience=Audience(email=body.contact.email, phone=body.contact.phone, external_id=body.contact.external_id),
        contact_update=ContactUpdate(fields=body.contact.fields, email_consent=body.contact.email_consent),
        data=body.data,
    )


@router.post("/v1/events", status_code=202)
def post_event(body: NativeEvent, principal: EventWriter, request: Request) -> Accepted:
    """Accept one event: the automations it triggers run in the worker."""
    return submit(request, to_trigger(body, principal.workspace_id)).accepted
