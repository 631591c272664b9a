"""The apply file: its pydantic models, and reading one; every error names where in the file it is."""

from email.utils import parseaddr
from pathlib import Path
from typing import Literal
from uuid import UUID

import yaml
from pydantic import Field, ValidationError, field_validator

from tripmail.automations.steps import SpecModel, StepSpec
from tripmail.contacts.fields import FieldType
from tripmail.durations import parse_duration
from tripmail.errors import InvalidConfig


class ContactFieldSpec(SpecModel):
    name: str = Field(min_length=1, max_length=100)
    type: FieldType
    number: int | None = Field(default=None, ge=1, description="esputnik's profileInputId for this field")


class EventTypeSpec(SpecModel):
    key: str = Field(min_length=1, max_length=100)
    name: str | None = None
    uuid: UUID | None = None
    params: dict[str, FieldType] = Field(default_factory=dict)
    dedupe_window: int | str | None = None

    @field_validator("dedupe_window")
    @classmethod
    def _parse_window(cls, value: int | str | None) -> int | None:
        return None if value is None else parse_duration(value)


class TemplateSpec(SpecModel):
    key: str = Field(min_length=1, max_length=100)
    subject: str
    html: str | None = None
    text: str | None = None
    syntax: Literal["jinja", "apicontent", "velocity"] = "jinja"
    data_param: str | None = Field(
        default=None, max_length=100, description="the param that `data` means in this template (esputnik's JSON)"
    )


class AutomationSpec(SpecModel):
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


class ApplyFile(SpecModel):
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
