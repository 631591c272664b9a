"""The one canonical trigger request that every dialect becomes."""

import math
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationInfo, field_validator, model_validator
from pydantic.networks import validate_email

from tripmail.contacts.field_options import FieldOption
from tripmail.contacts.identity import normalize_email, normalize_phone

# The validation context of a trigger read back from the queue or the database: the api checked and normalised its
# identifiers when it accepted it. Checking an email again (email_validator) is a large share of the worker's time
# (bench/results.md, What the code's shape rests on).
_READ_BACK = {"read_back": True}


def _read_back(info: ValidationInfo) -> bool:
    return bool(info.context and info.context.get("read_back"))


class CustomFieldMatch(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    value: JsonValue


class Audience(BaseModel):
    """One contact named by an identifier it carries, or every contact a custom field or a query selects."""

    model_config = ConfigDict(frozen=True)

    contact_id: str | None = Field(default=None, max_length=100)
    email: str | None = None
    phone: str | None = Field(default=None, max_length=32)
    external_id: str | None = Field(default=None, max_length=300)
    email_md5: str | None = Field(default=None, pattern=r"^[0-9a-f]{32}$")
    email_xxh: str | None = Field(default=None, pattern=r"^[0-9a-f]{16}$")
    custom_field: CustomFieldMatch | None = None
    query: dict[str, JsonValue] | None = None

    @property
    def names_someone(self) -> bool:
        identifiers = (self.contact_id, self.email, self.phone, self.external_id, self.email_md5, self.email_xxh)
        return any(value is not None for value in identifiers)

    @property
    def selects_many(self) -> bool:
        return self.custom_field is not None or self.query is not None

    @field_validator("email")
    @classmethod
    def _valid_email(cls, email: str | None, info: ValidationInfo) -> str | None:
        # pydantic's EmailStr check, called here so that a trigger read back can skip it.
        return email if email is None or _read_back(info) else normalize_email(validate_email(email)[1])

    @field_validator("phone")
    @classmethod
    def _normalize_phone(cls, phone: str | None, info: ValidationInfo) -> str | None:
        return phone if phone is None or _read_back(info) else normalize_phone(phone)


class ContactUpdate(BaseModel):
    """What the trigger upserts onto its contact(s); data for the message goes in TriggerRequest.data."""

    fields: dict[str, JsonValue] = Field(default_factory=dict)
    email_consent: bool | None = None
    # Consent for a contact this trigger creates; an existing contact keeps its own (cocomail's consentsToEmails).
    email_consent_if_created: bool | None = None


class FieldOverride(BaseModel):
    """A contact field value sent with the trigger; `option` says how it meets the stored value (SPEC 0/1/2)."""

    name: str
    value: JsonValue
    # A Literal of the members rather than the enum: the enum would also take "1", and show as a schema of its own.
    option: Literal[FieldOption.IF_EMPTY, FieldOption.MESSAGE_ONLY, FieldOption.ALWAYS]


class Attachment(BaseModel):
    name: str = Field(min_length=1, max_length=255, pattern=r"^[^\r\n]+$")
    content_type: str
    content_base64: str


class ChannelFilter(BaseModel):
    """Which of the contact's subscriptions to use; `not_strict` allows another fitting one when it is missing."""

    email: str | None = None
    phone: str | None = None
    subscription_id: str | None = None
    provider: str | None = None
    not_strict: bool = False


class TriggerContent(BaseModel):
    """What a trigger's messages show; read back on its own when they are built, without the rest re-validated."""

    data: dict[str, JsonValue] = Field(default_factory=dict)
    fields: list[FieldOverride] = Field(default_factory=list)
    attachments: list[Attachment] = Field(default_factory=list)


class TriggerRequest(TriggerContent):
    workspace_id: int
    event: str | None = Field(default=None, min_length=1, max_length=100)
    automation_id: int | None = None
    key: str | None = Field(default=None, max_length=300)
    audience: Audience
    contact_update: ContactUpdate = Field(default_factory=ContactUpdate)
    channel_filter: ChannelFilter | None = None
    hooks: dict[str, JsonValue] = Field(default_factory=dict)
    create_event_type: bool = True
    create_contact: bool = True

    @model_validator(mode="after")
    def _event_or_automation(self) -> Self:
        if (self.event is None) == (self.automation_id is None):
            raise ValueError("give exactly one of event (an event-type key) or automation_id")
        return self

    @model_validator(mode="after")
    def _finite_numbers(self) -> Self:
        # Python's JSON reader accepts NaN and Infinity; JSON, and PostgreSQL's json type, do not.
        for where, value in (
            ("data", self.data),
            ("contact.fields", self.contact_update.fields),
            ("hooks", self.hooks),
        ):
            if (path := _non_finite(value, where)) is not None:
                raise ValueError(f"{path}: numbers must be finite (NaN and Infinity are not JSON)")
        return self

    @classmethod
    def read_back(cls, stored: Any) -> "TriggerRequest":
        """A trigger the api accepted, read back from the queue or an event row."""
        return cls.model_validate(stored, context=_READ_BACK)

    @property
    def event_name(self) -> str:
        """The event-type key, or `automation:<id>` for a trigger aimed straight at one automation."""
        return self.event if self.event is not None else f"automation:{self.automation_id}"


def _non_finite(value: JsonValue, path: str) -> str | None:
    """The path of the first NaN or infinite number inside `value`, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        if (found := _non_finite(item, f"{path}.{key}")) is not None:
            return found
    return None
