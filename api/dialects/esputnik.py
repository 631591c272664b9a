"""esputnik (seed 002): POST /compat/esputnik/api/v2/event, HTTP Basic (token as password) or Bearer."""

import json
from contextlib import suppress
from typing import Annotated, Self

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator, model_validator

from api.auth import Principal, basic_or_bearer
from api.dialects.routing import dialect_router
from api.intake import submit
from tripmail.contacts import normalize_phone
from tripmail.errors import FieldError, InvalidRequest, TripmailError
from tripmail.fields import coerce_field_value, numbered_fields
from tripmail.models import ContactField
from tripmail.schemas.trigger import Audience, ContactUpdate, TriggerRequest

MAX_BODY_BYTES = 20 * 1024
FORBIDDEN_CHARACTERS = "<;\u2019\\/|\"`'^?!,>"  # the seed's list; \u2019 is the right single quotation mark
CONTACT_IDENTIFIERS = ("contactId", "externalCustomerId", "email", "phone", "pushToken")
EMAIL_PARAMS = ("email", "emailaddress")
WIRE_NAMES = {"email": "email", "phone": "phone", "external_id": "externalCustomerId", "contact_id": "contactId"}
MAX_NAME_LENGTH = 60


def _allowed_characters(value: str) -> str:
    found = sorted({character for character in value if character in FORBIDDEN_CHARACTERS})
    if found:
        raise ValueError(f"must not contain {' '.join(found)} (forbidden: {' '.join(FORBIDDEN_CHARACTERS)})")
    return value


def _blank(value: JsonValue) -> bool:
    """esputnik ignores an externalCustomerId of "", " ", "null" or null."""
    return value is None or (isinstance(value, str) and value.strip() in ("", "null"))


class EsputnikParam(BaseModel):
    name: str = Field(min_length=1)
    value: JsonValue = None


class EsputnikEvent(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    event_type_key: str = Field(alias="eventTypeKey", min_length=1, max_length=100)
    key_value: str | None = Field(default=None, alias="keyValue", max_length=300)
    params: list[EsputnikParam] = Field(default_factory=list)

    _check_event_type_key = field_validator("event_type_key")(_allowed_characters)

    @field_validator("key_value")
    @classmethod
    def _check_key_value(cls, value: str | None) -> str | None:
        return None if value is None else _allowed_characters(value)

    @model_validator(mode="after")
    def _identifies_a_contact(self) -> Self:
        if self.key_value:
            return self
        if all(self.param(name) is None for name in (*CONTACT_IDENTIFIERS, *EMAIL_PARAMS)):
            raise ValueError(f"without keyValue, params must contain one of {', '.join(CONTACT_IDENTIFIERS)}")
        return self

    def param(self, *names: str) -> JsonValue:
        """The first non-blank value among params of these names (case-insensitive)."""
        wanted = {name.lower() for name in names}
        return next((p.value for p in self.params if p.name.lower() in wanted and not _blank(p.value)), None)


class ContactJson(BaseModel):
    """The contact that `contactJson` describes, validated as esputnik validates a new contact."""

    model_config = ConfigDict(extra="allow")

    firstname: str | None = Field(default=None, max_length=MAX_NAME_LENGTH)
    lastname: str | None = Field(default=None, max_length=MAX_NAME_LENGTH)
    sms: str | None = None
    profileInputs: list[JsonValue] = Field(default_factory=list)  # noqa: N815 - the wire name
    confirmed: bool | None = None

    @field_validator("sms")
    @classmethod
    def _international_phone(cls, value: str | None) -> str | None:
        return None if value is None else normalize_phone(value)


def _profile_inputs(
    inputs: JsonValue, fields: dict[int, ContactField], where: str
) -> tuple[dict[str, JsonValue], list[FieldError]]:
    values: dict[str, JsonValue] = {}
    errors: list[FieldError] = []
    if not isinstance(inputs, list):
        return values, [FieldError(field=where, message="must be a list of {profileInputId, value}")]
    for index, item in enumerate(inputs):
        place = f"{where}[{index}]"
        number = item.get("profileInputId") if isinstance(item, dict) else None
        field = fields.get(number) if isinstance(number, int) and not isinstance(number, bool) else None
        if field is None or not isinstance(item, dict):
            errors.append(FieldError(field=f"{place}.profileInputId", message=f"no contact field numbered {number!r}"))
            continue
        try:
            values[field.name] = coerce_field_value(field.type, item.get("value"))
        except ValueError as exc:
            errors.append(FieldError(field=f"{place}.value", message=f"{field.name} ({field.type}): {exc}"))
    return values, errors


def _contact_json(raw: JsonValue, fields: dict[int, ContactField]) -> tuple[dict[str, JsonValue], str | None]:
    """Contact fields and phone from `contactJson`; InvalidRequest lists every non-valid field."""
    where = "params.contactJson"
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{where}: not valid JSON: {exc}", field=where) from exc
    errors: list[FieldError] = []
    try:
        contact = ContactJson.model_validate(raw)
    except ValidationError as exc:
        errors += [
            FieldError(field=".".join([where, *(str(p) for p in e["loc"])]), message=e["msg"])
            for e in exc.errors()
            if e["loc"][:1] != ("profileInputs",)
        ]
    inputs = raw.get("profileInputs", []) if isinstance(raw, dict) else []
    values, input_errors = _profile_inputs(inputs, fields, f"{where}.profileInputs")
    errors += input_errors
    if errors:
        raise InvalidRequest.listing(errors)
    named = {"firstname": contact.firstname, "lastname": contact.lastname, **(contact.model_extra or {})}
    values |= {name: value for name, value in named.items() if value is not None}
    return values, contact.sms


def to_trigger(body: EsputnikEvent, workspace_id: int, fields: dict[int, ContactField]) -> TriggerRequest:
    data = {param.name: param.value for param in body.params}
    updates: dict[str, JsonValue] = {}
    phone = body.param("phone")
    embedded = body.param("json")
    if isinstance(embedded, dict) and "profileInputs" in embedded:
        # As in esputnik, an array with any error is ignored whole rather than refusing the event.
        values, errors = _profile_inputs(embedded["profileInputs"], fields, "params.json.profileInputs")
        updates |= {} if errors else values
    contact_json = body.param("contactJson")
    if contact_json is not None:
        values, sms = _contact_json(contact_json, fields)
        updates |= values
        phone = phone or sms
    identifiers = {
        "email": body.param(*EMAIL_PARAMS),
        "phone": phone,
        "external_id": body.param("externalCustomerId"),
        "contact_id": body.param("contactId"),
    }
    errors = [
        FieldError(field=f"params.{WIRE_NAMES[name]}", message="expected text or a number")
        for name, value in identifiers.items()
        if value is not None and (isinstance(value, bool) or not isinstance(value, str | int))
    ]
    if errors:
        raise InvalidRequest.listing(errors)
    try:
        audience = Audience(**{name: str(value) for name, value in identifiers.items() if value is not None})
    except ValidationError as exc:
        errors = [FieldError(field=f"params.{WIRE_NAMES[str(e['loc'][0])]}", message=e["msg"]) for e in exc.errors()]
        raise InvalidRequest.listing(errors) from exc
    if audience.email is None and body.key_value and "@" in body.key_value:
        # keyValue names the contact when it is an email; a key that only looks like one ("order@42") does not.
        with suppress(ValidationError):
            audience = audience.model_copy(update={"email": Audience(email=body.key_value).email})
    return TriggerRequest(
        workspace_id=workspace_id,
        event=body.event_type_key,
        key=body.key_value,
        audience=audience,
        contact_update=ContactUpdate(fields=updates),
        data=data,
    )


def render_error(exc: TripmailError) -> JSONResponse:
    status = 400 if exc.status == 422 else exc.status
    errors = exc.errors or ([FieldError(field=exc.field, message=exc.detail)] if exc.field else [])
    return JSONResponse({"message": exc.detail, "errors": errors}, status_code=status)


class EsputnikError(BaseModel):
    message: str
    errors: list[FieldError]


router = dialect_router(
    "esputnik",
    render_error,
    error_model=EsputnikError,
    statuses=(400, 401, 403, 404, 413, 429, 503),
    max_body_bytes=MAX_BODY_BYTES,
)


@router.post("/api/v2/event", response_class=Response)
def generate_event(
    body: EsputnikEvent, principal: Annotated[Principal, Depends(basic_or_bearer("events:write"))], request: Request
) -> Response:
    """Generate an event; its event type is created on first use (seed 002)."""
    with request.app.state.sessions() as session:
        fields = numbered_fields(session, principal.workspace_id)
    submit(request, to_trigger(body, principal.workspace_id, fields))
    return Response(status_code=200)
