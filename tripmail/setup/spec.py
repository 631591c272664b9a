"""The apply file: its pydantic models, and reading one; every error names where in the file it is."""

from email.utils import parseaddr
from pathlib import Path
from typing import Literal
from uuid import UUID

import yaml
from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator, model_validator

from tripmail.contacts.fields import FieldType
from tripmail.durations import parse_duration
from tripmail.errors import InvalidConfig


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ContactFieldSpec(_Spec):
    name: str = Field(min_length=1, max_length=100)
    type: FieldType
    number: int | None = Field(default=None, ge=1, description="esputnik's profileInputId for this field")


class EventTypeSpec(_Spec):
    key: str = Field(min_length=1, max_length=100)
    name: str | None = None
    uuid: UUID | None = None
    params: dict[str, FieldType] = Field(default_factory=dict)
    dedupe_window: int | str | None = None

    @field_validator("dedupe_window")
    @classmethod
    def _parse_window(cls, value: int | str | None) -> int | None:
        return None if value is None else parse_duration(value)


class TemplateSpec(_Spec):
    key: str = Field(min_length=1, max_length=100)
    subject: str
    html: str | None = None
    text: str | None = None
    syntax: Literal["jinja", "apicontent", "velocity"] = "jinja"
    data_param: str | None = Field(
        default=None, max_length=100, description="the param that `data` means in this template (esputnik's JSON)"
    )


class SendEmailStep(_Spec):
    template: str
    # esputnik's "Send obligatory (transactional) email": this step mails without marketing consent and without
    # unsubscribe headers, in an automation that otherwise is marketing.
    transactional: bool = False


class ConditionStep(_Spec):
    """`if` (see tripmail.automations.conditions) chooses `then` or `else`; either may be empty, and both go on
    after."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    if_: str = Field(alias="if", min_length=1, max_length=2000)
    then: list["StepSpec"] = Field(default_factory=list)
    else_: list["StepSpec"] = Field(default_factory=list, alias="else")


class WaitUntil(_Spec):
    """Wait until the time the event's data gives (ISO 8601, or seconds since the epoch)."""

    until: str = Field(pattern=r"^data(\.[A-Za-z_][A-Za-z0-9_]*)+$", description="e.g. data.delivery_at")


class UpdateContactStep(_Spec):
    """Contact fields to set: a literal, or text with `{{ data.x }}` / `{{ contact.x }}` rendered for the event."""

    set: dict[str, JsonValue] = Field(min_length=1)


class WebhookStep(_Spec):
    """POST the event, the contact and the trigger's `custom_data` as JSON, signed with `secret` (HMAC-SHA256)."""

    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)
    secret: str | None = Field(default=None, min_length=16, max_length=200)


class StepSpec(_Spec):
    """One step: exactly one of its kinds."""

    send_email: SendEmailStep | None = None
    wait: int | str | WaitUntil | None = Field(default=None, description="a duration (2d, 90m) or {until: data.x}")
    condition: ConditionStep | None = None
    update_contact: UpdateContactStep | None = None
    webhook: WebhookStep | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "StepSpec":
        given = [name for name in STEP_KINDS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a step is exactly one of {', '.join(STEP_KINDS)}; got {', '.join(given) or 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(name for name in STEP_KINDS if getattr(self, name) is not None)


STEP_KINDS = ("send_email", "wait", "condition", "update_contact", "webhook")


class AutomationSpec(_Spec):
    name: str = Field(min_length=1, max_length=200)
    id: int | None = Field(default=None, ge=1)
    trigger: str | None = Field(default=None, max_length=100)
    status: Literal["active", "paused", "draft"] = "active"
    transactional: bool = False
    link: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{32,64}$",
        description="altcraft v1.0 link secret (at least 128 bits); generated when absent",
    )
    steps: list[StepSpec] = Field(min_length=1)


class ApplyFile(_Spec):
    workspace: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    from_address: str | None = Field(default=None, alias="from")
    contact_fields: list[ContactFieldSpec] = Field(default_factory=list)
    event_types: list[EventTypeSpec] = Field(default_factory=list)
    templates: list[TemplateSpec] = Field(default_factory=list)
    automations: list[AutomationSpec] = Field(default_factory=list)

    @field_validator("from_address")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if "\r" in value or "\n" in value or "@" not in parseaddr(value)[1]:
            raise ValueError("expected a sender such as 'Acme <noreply@acme.example>' on one line")
        return value


def load_apply_file(path: Path) -> ApplyFile:
    """Parse and validate; every error names where in the file it is."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InvalidConfig(f"{path}: not valid YAML: {exc}") from exc
    try:
        return ApplyFile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}" for error in exc.errors()
        )
        raise InvalidConfig(f"{path}: {problems}") from exc
