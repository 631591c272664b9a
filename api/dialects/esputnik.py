"""esputnik (seed 002): POST /compat/esputnik/api/v1/event and .../api/v2/event; HTTP Basic (token as password) or
Bearer."""

import json
import logging
from contextlib import suppress
from typing import Annotated, Any, Self

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from api.auth import Principal, basic_or_bearer
from api.dialects.routing import dialect_router
from api.intake import submit
from tripmail.contacts.fields import coerce_field_value, numbered_fields
from tripmail.contacts.identity import normalize_phone
from tripmail.contacts.store import find_contact
from tripmail.errors import FieldError, InvalidRequest, TripmailError
from tripmail.models import ContactField
from tripmail.schemas.trigger import Audience, ContactUpdate, TriggerRequest

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 20 * 1024
FORBIDDEN_CHARACTERS = "<;\u2019\\/|\"`'^?!,>"  # the seed's list; \u2019 is the right single quotation mark
CONTACT_IDENTIFIERS = ("contactId", "externalCustomerId", "email", "phone", "pushToken")
EMAIL_PARAMS = ("email", "emailaddress")
WIRE_NAMES = {"email": "email", "phone": "phone", "external_id": "externalCustomerId"}
MAX_NAME_LENGTH = 60


def _allowed_characters(value: str) -> str:
    found = sorted({character for character in value if character in FORBIDDEN_CHARACTERS})
    if found:
        raise ValueError(f"must not contain {' '.join(found)} (forbidden: {' '.join(FORBIDDEN_CHARACTERS)})")
    return value


def _blank(value: JsonValue) -> bool:
    """esputnik ignores an externalCustomerId of "", " ", "null" or null."""
    return value is None or (isinstance(value, str) and value.strip() in ("", "null"))


def _number_as_text(value: Any) -> Any:
    """A keyValue sent as a JSON number (PHP's `time()`, an order number) is the same key written as text."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _unescaped(value: JsonValue) -> JsonValue:
    """v1 carries a nested object or array as JSON inside a string; v2 carries it as JSON."""
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        with suppress(json.JSONDecodeError):
            decoded = json.loads(value)
            if isinstance(decoded, dict | list):
                return decoded
    return value


class EsputnikParam(BaseModel):
    name: str = Field(min_length=1)
    value: JsonValue = None


class EsputnikEvent(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    event_type_key: str = Field(alias="eventTypeKey", min_length=1, max_length=100)
    key_value: Annotated[str | None, BeforeValidator(_number_as_text)] = Field(
        default=None, alias="keyValue", max_length=300
    )
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


class EsputnikEventV1(EsputnikEvent):
    """The v1 body: the same fields, with nested JSON escaped into string values."""

    @field_validator("params")
    @classmethod
    def _unescape(cls, params: list[EsputnikParam]) -> list[EsputnikParam]:
        return [EsputnikParam(name=param.name, value=_unescaped(param.value)) for param in params]


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
    def _phone(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else normalize_phone(value, (info.context or {}).get("phone_region"))


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


def _contact_json(
    raw: JsonValue, fields: dict[int, ContactField], phone_region: str | None
) -> tuple[dict[str, JsonValue], str | None]:
    """Contact fields and phone from `contactJson`; InvalidRequest lists every non-valid field."""
    where = "params.contactJson"
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"{where}: not valid JSON: {exc}", field=where) from exc
    errors: list[FieldError] = []
    try:
        contact = ContactJson.model_validate(raw, context={"phone_region": phone_region})
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


def _identifiers(
    body: EsputnikEvent, phone: JsonValue, phone_region: str | None
) -> tuple[dict[str, str], list[FieldError]]:
    """The contact identifiers among the params that are fit to store, and what is wrong with the others."""
    raw = {"email": body.param(*EMAIL_PARAMS), "phone": phone, "external_id": body.param("externalCustomerId")}
    fit: dict[str, str] = {}
    errors: list[FieldError] = []
    for name, value in raw.items():
        field = f"params.{WIRE_NAMES[name]}"
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, str | int):
            errors.append(FieldError(field=field, message="expected text or a number"))
            continue
        try:
            text = normalize_phone(str(value), phone_region) if name == "phone" else str(value)
            fit[name] = getattr(Audience(**{name: text}), name)
        except (ValueError, ValidationError) as exc:
            message = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            errors.append(FieldError(field=field, message=message))
    return fit, errors


def to_trigger(
    body: EsputnikEvent,
    workspace_id: int,
    fields: dict[int, ContactField],
    *,
    phone_region: str | None = None,
    contact_id: str | None = None,
    validate_contact_json: bool = True,
) -> TriggerRequest:
    """`contact_id` is the params' contactId when it names a Tripmail contact; esputnik's own ids name none."""
    data = {param.name: param.value for param in body.params}
    updates: dict[str, JsonValue] = {}
    errors: list[FieldError] = []
    phone = body.param("phone")
    embedded = body.param("json")
    if isinstance(embedded, dict) and "profileInputs" in embedded:
        values, input_errors = _profile_inputs(embedded["profileInputs"], fields, "params.json.profileInputs")
        updates |= values
        errors += input_errors
    contact_json = body.param("contactJson")
    if contact_json is not None:
        try:
            values, sms = _contact_json(contact_json, fields, phone_region)
        except InvalidRequest as exc:
            # v2 validates contactJson and answers which fields are not valid; v1 ignores it like any faulty data.
            if validate_contact_json:
                raise
            errors += exc.errors or [FieldError(field="params.contactJson", message=exc.detail)]
        else:
            updates |= values
            phone = phone or sms
    identifiers, identifier_errors = _identifiers(body, phone, phone_region)
    errors += identifier_errors
    if errors:
        # As esputnik does, params with any faulty contact data leave the contact card as it is; the event still
        # goes, addressed by what in them is fit (a contact is created only for an email, to send it mail).
        # The answer stays esputnik's bare 200, so the log is where an operator sees why the card did not change.
        # Field names only: the messages quote the values, a contact's phone or email among them.
        log.info(
            "esputnik event %r: contact data ignored, not valid: %s", body.event_type_key, [e["field"] for e in errors]
        )
        fit = [name for name in ("email", "external_id", "phone") if name in identifiers]
        identifiers = {fit[0]: identifiers[fit[0]]} if fit else {}
        updates = {}
    if contact_id is not None:
        identifiers["contact_id"] = contact_id
    audience = Audience(**identifiers)
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
        create_contact=not errors or audience.email is not None,
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


def _known_contact_id(request: Request, workspace_id: int, value: JsonValue) -> str | None:
    """The contactId when it is a Tripmail contact's id; the platform's own contact ids mean nothing here."""
    if value is None or isinstance(value, bool) or not isinstance(value, str | int) or len(str(value)) > 100:
        return None
    with request.app.state.sessions() as session:
        contact = find_contact(session, workspace_id, Audience(contact_id=str(value)))
    return None if contact is None else contact.id


def _generate(request: Request, body: EsputnikEvent, principal: Principal, *, v2: bool) -> Response:
    with request.app.state.sessions() as session:
        fields = numbered_fields(session, principal.workspace_id)
    trigger = to_trigger(
        body,
        principal.workspace_id,
        fields,
        phone_region=request.app.state.settings.phone_default_region,
        contact_id=_known_contact_id(request, principal.workspace_id, body.param("contactId")),
        validate_contact_json=v2,
    )
    submit(request, trigger)
    return Response(status_code=200)


@router.post("/api/v2/event", response_class=Response)
def generate_event(
    body: EsputnikEvent, principal: Annotated[Principal, Depends(basic_or_bearer("events:write"))], request: Request
) -> Response:
    """Generate an event; its event type is created on first use."""
    return _generate(request, body, principal, v2=True)


@router.post("/api/v1/event", response_class=Response)
def generate_event_v1(
    body: EsputnikEventV1, principal: Annotated[Principal, Depends(basic_or_bearer("events:write"))], request: Request
) -> Response:
    """Generate an event, v1: nested JSON arrives escaped in string values, and contactJson is not validated."""
    return _generate(request, body, principal, v2=False)
