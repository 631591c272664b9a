"""Tripmail's own API: POST /v1/events."""

import re
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Annotated, Any, Literal, Self, TypeVar

from email_validator import SPECIAL_USE_DOMAIN_NAMES
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from pydantic import (
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    JsonValue,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_validator,
)
from starlette.concurrency import run_in_threadpool

from api.auth import EVENT_WRITER, EventWriter, Principal
from api.bodies import PARSE_IN_THREAD_BYTES, BoundedRoute, bounded
from api.intake import submit_event, submit_events
from api.problems import problem_responses
from api.ratelimit import charge_budget, token_key
from tripmail.contacts.identity import normalize_email, normalize_phone
from tripmail.errors import FieldError, KeyReused, TripmailError
from tripmail.schemas.accepted import Accepted
from tripmail.schemas.trigger import Audience, ContactUpdate, TriggerRequest

router = APIRouter(tags=["native"], route_class=BoundedRoute)

T = TypeVar("T")

# Lower-case ASCII letters, digits and . _ + - before the @ (a dot-atom), and a domain of dot-separated labels of
# at most 63 letters, digits and inner hyphens that ends in a label of letters.
_PLAIN_EMAIL = re.compile(r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
_MAX_EMAIL_LENGTH = 254  # email_validator's limit, in octets


def _plain_or_checked(value: object, check: ValidatorFunctionWrapHandler) -> str:
    """A plain address as it is, any other through EmailStr's check.

    EmailStr (email_validator) is most of the cost of validating an event (bench/results.md, What the code's
    shape rests on). email_validator accepts a plain address and returns it unchanged, unless it is too long, its
    domain is special-use, or a label holds "--" (a Punycode label or one email_validator refuses); those go
    through the check as well.
    """
    if isinstance(value, str) and len(value) <= _MAX_EMAIL_LENGTH and _PLAIN_EMAIL.fullmatch(value):
        domain = value.partition("@")[2]
        special = any(domain == name or domain.endswith("." + name) for name in SPECIAL_USE_DOMAIN_NAMES)
        if "--" not in domain and not special:
            return value
    email: str = check(value)
    return email


ContactEmail = Annotated[EmailStr, WrapValidator(_plain_or_checked)]


class NativeContact(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: ContactEmail | None = None
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
        description=(
            "Idempotency key: a repeat with the same content (everything but event and key) inside the dedupe "
            "window is a duplicate and sends nothing; the same key with other content is refused (409 key-reused)."
        ),
    )
    contact: NativeContact
    data: dict[str, JsonValue] = Field(
        default_factory=dict, description="For templates only; never stored on the contact."
    )
    custom_data: dict[str, JsonValue] = Field(
        default_factory=dict, description="Passed to the webhook steps of the automations the event starts."
    )


def to_audience(contact: NativeContact) -> Audience:
    # NativeContact checked each identifier as Audience does; checking an email again would double the costliest
    # step of the native check (email_validator), so only Audience's normalisation is applied here.
    return Audience.model_construct(
        email=None if contact.email is None else normalize_email(contact.email),
        phone=contact.phone,
        external_id=contact.external_id,
    )


def to_trigger(body: NativeEvent, workspace_id: int) -> TriggerRequest:
    return TriggerRequest(
        workspace_id=workspace_id,
        event=body.event,
        key=body.key,
        audience=to_audience(body.contact),
        contact_update=ContactUpdate(fields=body.contact.fields, email_consent=body.contact.email_consent),
        data=body.data,
        hooks=body.custom_data,
    )


class NativeEventRoute(APIRoute):
    """POST /v1/events without FastAPI's per-request dependency solving and response validation.

    Those cost more api CPU than the rest of an accepted event. A JSON request is authenticated (by `bounded`,
    before its body is read), parsed and validated here; one that fails validation, or that is not plain
    `application/json`, goes to FastAPI's own handler for the route, so every refusal is FastAPI's, word for
    word. The endpoint's signature still documents the route in /openapi.json. Both read the body `bounded`.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        documented = super().get_route_handler()

        async def handler(request: Request) -> Response:
            if request.headers.get("content-type") != "application/json":
                return await documented(request)
            try:
                raw = await request.json()
            except Exception:  # unreadable or not JSON: FastAPI says how
                return await documented(request)
            principal = await EVENT_WRITER.principal(request)  # `bounded` found it before reading the body
            try:
                body = await validate_off_the_loop(request, NativeEvent.model_validate, raw)
            except ValidationError:
                return await documented(request)
            accepted = await accept_event(request, body, principal)
            return Response(accepted.model_dump_json(), status_code=202, media_type="application/json")

        return bounded(handler, token=EVENT_WRITER)


async def validate_off_the_loop(request: Request, validate: Callable[[Any], T], raw: Any) -> T:
    """`validate(raw)`, in the threadpool when the body is large: validating costs several times parsing it
    (bench/results.md, What the code's shape rests on), and on the loop it would hold every other request as long."""
    if len(await request.body()) <= PARSE_IN_THREAD_BYTES:
        return validate(raw)
    return await run_in_threadpool(validate, raw)


async def accept_event(request: Request, body: NativeEvent, principal: Principal) -> Accepted:
    return await submit_event(request, to_trigger(body, principal.workspace_id))


async def post_event(body: NativeEvent, principal: EventWriter, request: Request) -> Accepted:
    """Accept one event: the automations it triggers run in the worker."""
    return await accept_event(request, body, principal)


router.add_api_route(
    "/v1/events",
    post_event,
    methods=["POST"],
    status_code=202,
    responses=problem_responses(401, 403, 404, 409, 413, 422, 429, 503),
    route_class_override=NativeEventRoute,
)


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
    # Refused because its key was first used by this event, with other content.
    first_event_id: str | None = None


class BatchResult(BaseModel):
    accepted: int
    rejected: int
    results: list[BatchItem]


def _rejected(index: int, errors: list[FieldError]) -> BatchItem:
    return BatchItem(index=index, status="rejected", errors=errors)


def _answer(index: int, answer: Accepted | TripmailError) -> BatchItem:
    if isinstance(answer, TripmailError):
        # Unavailable too: the answer must say which events to send again.
        rejected = _rejected(index, [FieldError(field=answer.field or "", message=answer.detail)])
        if isinstance(answer, KeyReused):
            rejected.first_event_id = answer.first_event_id
        return rejected
    return BatchItem(
        index=index,
        status="queued",
        id=answer.id,
        duplicate=answer.duplicate,
        matching_automations=answer.matching_automations,
    )


def _checked(
    body: NativeBatch, *, workspace_id: int
) -> tuple[list[BatchItem | None], list[tuple[int, TriggerRequest]]]:
    """The batch's refusals in place (None for each valid event), and its valid events as triggers."""
    results: list[BatchItem | None] = []
    valid: list[tuple[int, TriggerRequest]] = []
    for index, raw in enumerate(body.events):
        try:
            valid.append((index, to_trigger(NativeEvent.model_validate(raw), workspace_id)))
        except ValidationError as exc:
            errors = [FieldError(field=".".join(str(p) for p in e["loc"]), message=e["msg"]) for e in exc.errors()]
            results.append(_rejected(index, errors))
            continue
        results.append(None)
    return results, valid


@router.post("/v1/events/batch", status_code=202, responses=problem_responses(401, 403, 413, 422, 429))
async def post_events(body: NativeBatch, principal: EventWriter, request: Request) -> BatchResult:
    """Accept up to 1,000 events; each gets its own result, in order, and a bad one does not refuse the rest."""
    # A batch counts one request per event, valid or not; authenticating it charged the first.
    charge_budget(request, token_key(principal.token_id), len(body.events) - 1, charged=1)
    results, valid = await validate_off_the_loop(request, partial(_checked, workspace_id=principal.workspace_id), body)
    answers = await submit_events(request, [trigger for _, trigger in valid])
    for (index, _), answer in zip(valid, answers, strict=True):
        results[index] = _answer(index, answer)
    items = [item for item in results if item is not None]
    accepted = sum(1 for item in items if item.status == "queued")
    return BatchResult(accepted=accepted, rejected=len(items) - accepted, results=items)
