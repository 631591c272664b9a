"""Tripmail's own API: POST /v1/events."""

from typing import Any, Literal, Self

from fastapi import APIRouter, Request
from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from api.auth import EventWriter
from api.intake import submit
from tripmail.contacts import normalize_phone
from tripmail.errors import FieldError, TripmailError
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

    @field_validator("phone")
    @classmethod
    def _international_phone(cls, phone: str | None) -> str | None:
        return None if phone is None else normalize_phone(phone)

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


MAX_BATCH = 1000


class NativeBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Items are validated one by one below, so one bad event does not refuse the others.
    events: list[Any] = Field(min_length=1, max_length=MAX_BATCH)


class BatchItem(BaseModel):
    index: int
    status: Literal["queued", "rejected"]
    id: str | None = None
    duplicate: bool | None = None
    matching_automations: int | None = None
    errors: list[FieldError] | None = None


class BatchResult(BaseModel):
    accepted: int
    rejected: int
    results: list[BatchItem]


def _submit_item(request: Request, index: int, raw: Any, workspace_id: int) -> BatchItem:
    try:
        accepted = submit(request, to_trigger(NativeEvent.model_validate(raw), workspace_id)).accepted
    except ValidationError as exc:
        errors = [FieldError(field=".".join(str(p) for p in e["loc"]), message=e["msg"]) for e in exc.errors()]
        return BatchItem(index=index, status="rejected", errors=errors)
    except TripmailError as exc:
        # Unavailable too: the events before it are queued, so the answer must say which ones to send again.
        return BatchItem(index=index, status="rejected", errors=[FieldError(field=exc.field or "", message=exc.detail)])
    return BatchItem(
        index=index,
        status="queued",
        id=accepted.id,
        duplicate=accepted.duplicate,
        matching_automations=accepted.matching_automations,
    )


@router.post("/v1/events/batch", status_code=202)
def post_events(body: NativeBatch, principal: EventWriter, request: Request) -> BatchResult:
    """Accept up to 1,000 events; each gets its own result, in order, and a bad one does not refuse the rest."""
    results = [_submit_item(request, index, raw, principal.workspace_id) for index, raw in enumerate(body.events)]
    accepted = sum(1 for item in results if item.status == "queued")
    return BatchResult(accepted=accepted, rejected=len(results) - accepted, results=results)
