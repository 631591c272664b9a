"""altcraft (seed 001): v1.1 POST /api/v1.1/campaigns/triggers/start/ and v1.0 GET|POST /trg/<link>/<value>.

A trigger campaign is an automation, named by its (fixed, numeric) id in v1.1 and by its link secret in v1.0.
Altcraft triggers existing profiles only: an audience that matches nobody is an error for one profile and an
empty send for a query. `resource_id` is accepted and not needed: a workspace has one contact database.
"""

from functools import partial
from typing import Annotated, Any, Literal

import anyio.from_thread
from fastapi import Body, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, EmailStr, Field, JsonValue, ValidationError

from api.auth import EVENTS_WRITE, Principal, authenticate, bearer_or_body
from api.dialects.routing import dialect_router
from api.intake import submit
from api.ratelimit import charge_budget, link_key
from tripmail.automations.program import find_automation, find_automation_by_link
from tripmail.config import Settings
from tripmail.contacts.audience import compile_query, custom_field_query, field_types
from tripmail.contacts.field_options import FieldOption
from tripmail.contacts.fields import check_overrides
from tripmail.contacts.store import find_contact
from tripmail.errors import Inactive, InvalidRequest, NotFound, TripmailError
from tripmail.models import Automation
from tripmail.rendering.attachments import parse_attachments
from tripmail.schemas.trigger import (
    Attachment,
    Audience,
    ChannelFilter,
    CustomFieldMatch,
    FieldOverride,
    TriggerRequest,
)

SUCCESS = {"data": None, "error": 0, "error_text": "Successful operation"}


class AltcraftAttach(BaseModel):
    data: str
    name: str = Field(min_length=1, max_length=255)


class AltcraftField(BaseModel):
    name: str
    value: JsonValue
    # Clients that build the body from form values send "1": pydantic's lax integers read both.
    option: int = Field(ge=0, le=2)


class AltcraftExtras(BaseModel):
    """What both versions may carry for the message itself."""

    model_config = ConfigDict(extra="ignore")

    content: dict[str, JsonValue] = Field(default_factory=dict)
    attach: list[AltcraftAttach] = Field(default_factory=list)
    custom_data: dict[str, JsonValue] = Field(default_factory=dict)
    fields: list[AltcraftField] = Field(default_factory=list)


class AltcraftStart(AltcraftExtras):
    # None when the token comes in `Authorization: Bearer`.
    token: str | None = None
    # The seed documents the id as a string ("5511") and sends it as a number (84): pydantic reads both.
    id: int
    matching: Literal["email", "phone", "profile_id", "custom"] | None = None
    email: EmailStr | None = None
    phone: str | None = None
    profile_id: str | None = None
    field_name: str | None = None
    field_value: int | float | str | None = None
    custom_request: dict[str, JsonValue] | None = None
    # Its wire shape is the canonical one.
    subscription_filter: ChannelFilter | None = None
    resource_id: int | None = None


def start_audience(body: AltcraftStart) -> Audience:
    """The v1.1 matching mode as an audience; a missing identifier is named."""
    if body.matching is None and body.custom_request is not None:
        return Audience(query=body.custom_request)
    mode = body.matching or "email"
    if mode == "custom":
        if body.field_name is None or body.field_value is None:
            raise InvalidRequest('"matching": "custom" needs field_name and field_value', field="field_name")
        return Audience(custom_field=CustomFieldMatch(name=body.field_name, value=body.field_value))
    identifier = {"email": body.email, "phone": body.phone, "profile_id": body.profile_id}[mode]
    if identifier is None:
        raise InvalidRequest(f'"matching": "{mode}" needs {mode}', field=mode)
    return Audience(**{"contact_id" if mode == "profile_id" else mode: identifier})


def link_audience(value: str) -> Audience:
    """v1.0's last path segment: an email, the md5 of an email (32 hex digits), or its xxhash (16, XXH64)."""
    kind = "email" if "@" in value else {32: "email_md5", 16: "email_xxh"}.get(len(value))
    try:
        if kind is not None:
            return Audience(**{kind: value if kind == "email" else value.lower()})
    except ValidationError:
        pass
    raise InvalidRequest("the link ends with an email, the md5 of an email or its xxhash", field="value")


def to_trigger(
    extras: AltcraftExtras,
    automation: Automation,
    audience: Audience,
    *,
    fields: list[FieldOverride],
    attachments: list[Attachment],
    channel_filter: ChannelFilter | None = None,
) -> TriggerRequest:
    return TriggerRequest(
        workspace_id=automation.workspace_id,
        automation_id=automation.id,
        audience=audience,
        data=extras.content,
        fields=fields,
        attachments=attachments,
        channel_filter=channel_filter,
        hooks=extras.custom_data,
        create_contact=False,
    )


def render_error(exc: TripmailError) -> JSONResponse:
    status = 400 if exc.status == 422 else exc.status
    return JSONResponse({"data": None, "error": status, "error_text": exc.detail}, status_code=status)


class AltcraftError(BaseModel):
    data: None
    error: int = Field(description="The HTTP status, as the seed's non-zero error code.")
    error_text: str


def body_limit(settings: Settings) -> int:
    """v1.1's token is in its body and v1.0's link is looked up once its body is read: anyone can make the api read
    this much, so it is kept small."""
    return settings.altcraft_max_body_bytes


router = dialect_router(
    "altcraft",
    render_error,
    error_model=AltcraftError,
    statuses=(400, 401, 403, 404, 409, 413, 429, 503),
    limit_before_auth=body_limit,
)


def _check_and_submit(
    request: Request, extras: AltcraftExtras, automation: Automation, audience: Audience, **options: Any
) -> None:
    """Refuse what would fail later (inactive campaign, nobody to match, bad query, fields or files), then submit."""
    if automation.status != "active":
        raise Inactive(f"trigger campaign {automation.id} is {automation.status}", field="id")
    max_terms = request.app.state.settings.query_max_terms
    with request.app.state.sessions() as session:
        types = field_types(session, automation.workspace_id)
        if audience.query is not None:
            compile_query(session, automation.workspace_id, audience.query, max_terms=max_terms)
        elif audience.custom_field is not None:
            # "tag-1, tag-2, ..." on a tags field is a condition per tag.
            match = custom_field_query(types, audience.custom_field.name, audience.custom_field.value)
            compile_query(session, automation.workspace_id, match, max_terms=max_terms, where="field_value")
        elif audience.names_someone and find_contact(session, automation.workspace_id, audience) is None:
            raise NotFound("no profile matches the request", field="matching")
    fields = check_overrides(
        types,
        [FieldOverride(name=f.name, value=f.value, option=FieldOption(f.option)) for f in extras.fields],
        "fields",
    )
    attachments = parse_attachments(
        [(item.name, item.data) for item in extras.attach],
        max_total_bytes=request.app.state.settings.attachment_max_bytes,
        where="attach",
    )
    submit(request, to_trigger(extras, automation, audience, fields=fields, attachments=attachments, **options))


@router.post("/api/v1.1/campaigns/triggers/start/")
def start(
    body: AltcraftStart,
    request: Request,
    header_principal: Annotated[Principal | None, Depends(bearer_or_body(EVENTS_WRITE))],
) -> dict[str, Any]:
    """Launch a trigger campaign for one profile or an audience (version 1.1); the token goes in the
    body, as the seed shows, or in `Authorization: Bearer`."""
    principal = header_principal or anyio.from_thread.run(
        partial(
            authenticate,
            request,
            body.token,
            scope=EVENTS_WRITE,
            how="\"token\" in the request body or 'Authorization: Bearer <token>'",
            field="token",
        )
    )
    with request.app.state.sessions() as session:
        automation = find_automation(session, principal.workspace_id, body.id)
    if automation is None:
        raise NotFound(f"trigger campaign {body.id} not found", field="id")
    # The seed: "Not used if custom_request is set".
    channel_filter = body.subscription_filter if body.custom_request is None else None
    _check_and_submit(request, body, automation, start_audience(body), channel_filter=channel_filter)
    return SUCCESS


def _link_trigger(request: Request, link: str, value: str, extras: AltcraftExtras) -> dict[str, Any]:
    with request.app.state.sessions() as session:
        automation = find_automation_by_link(session, link)
    if automation is None:
        raise NotFound("no trigger campaign has this link", field="link")
    charge_budget(request, link_key(automation.id))
    _check_and_submit(request, extras, automation, link_audience(value))
    return SUCCESS


@router.get("/trg/{link}/{value}")
def link_get(link: str, value: str, request: Request) -> dict[str, Any]:
    """Send the campaign to one profile named by email, md5 or xxhash (version 1.0)."""
    return _link_trigger(request, link, value, AltcraftExtras())


@router.post("/trg/{link}/{value}")
def link_post(
    link: str, value: str, request: Request, body: Annotated[AltcraftExtras | None, Body()] = None
) -> dict[str, Any]:
    """As GET, with JSON: `fields` overrides (options 0/1/2), and `content`, `attach`, `custom_data` as in v1.1."""
    return _link_trigger(request, link, value, body or AltcraftExtras())
