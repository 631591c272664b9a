"""The one canonical trigger request that every dialect becomes."""

from pydantic import BaseModel, ConfigDict, EmailStr, Field, JsonValue, field_validator

from tripmail.contacts import normalize_email


class Audience(BaseModel):
    """One contact, named by any identifier the contact carries."""

    model_config = ConfigDict(frozen=True)

    contact_id: str | None = None
    email: EmailStr | None = None
    phone: str | None = None
    external_id: str | None = None

    @property
    def names_someone(self) -> bool:
        return any(value is not None for value in (self.contact_id, self.email, self.phone, self.external_id))

    @field_validator("email")
    @classmethod
    def _normalize_email(cls, email: str | None) -> str | None:
        return None if email is None else normalize_email(email)


class ContactUpdate(BaseModel):
    """What the trigger upserts onto its contact(s); data for the message goes in TriggerRequest.data."""

    fields: dict[str, JsonValue] = Field(default_factory=dict)
    email_consent: bool | None = None


class TriggerRequest(BaseModel):
    workspace_id: int
    event: str = Field(min_length=1, max_length=100)
    key: str | None = Field(default=None, max_length=300)
    audience: Audience
    contact_update: ContactUpdate = Field(default_factory=ContactUpdate)
    data: dict[str, JsonValue] = Field(default_factory=dict)
    create_event_type: bool = True
