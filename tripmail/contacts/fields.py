"""Typed contact fields: what a value must look like for each declared type, and its stored form."""

import re
from datetime import UTC, date, datetime
from typing import Literal

from pydantic import JsonValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from tripmail.errors import FieldError, InvalidRequest
from tripmail.models import Contact, ContactField
from tripmail.schemas.trigger import FieldOverride

FieldType = Literal["string", "number", "boolean", "date", "timestamp", "tags"]
FIELD_TYPES: tuple[FieldType, ...] = ("string", "number", "boolean", "date", "timestamp", "tags")

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def coerce_field_value(field_type: str, value: JsonValue) -> JsonValue:
    """The stored form of `value` for a field of `field_type`; ValueError says what was expected."""
    if value is None:
        return None
    if field_type == "string":
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"expected text, got {type(value).__name__}")
    if field_type == "number":
        return _number(value)
    if field_type == "boolean":
        return _boolean(value)
    if field_type == "date":
        if isinstance(value, str) and _DATE.match(value):
            date.fromisoformat(value)
            return value
        raise ValueError(f"expected a date as YYYY-MM-DD, got {value!r}")
    if field_type == "timestamp":
        return _timestamp(value)
    if field_type == "tags":
        return _tags(value)
    raise ValueError(f"unknown field type {field_type!r}")


def _number(value: JsonValue) -> int | float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            return int(number) if number.is_integer() and "." not in value else number
    raise ValueError(f"expected a number, got {value!r}")


def _boolean(value: JsonValue) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"expected true or false, got {value!r}")


def _timestamp(value: JsonValue) -> str:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if moment.tzinfo is not None:
                return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
    raise ValueError(f"expected an ISO 8601 timestamp with a time zone (2024-03-11T13:45:00Z), got {value!r}")


def _tags(value: JsonValue) -> list[JsonValue]:
    texts = value.split(",") if isinstance(value, str) else value
    if isinstance(texts, list) and all(isinstance(tag, str) for tag in texts):
        return [tag.strip() for tag in texts if isinstance(tag, str) and tag.strip()]
    raise ValueError(f"expected tags as a list of text or 'tag-1, tag-2', got {value!r}")


def numbered_fields(session: Session, workspace_id: int) -> dict[int, ContactField]:
    """The workspace's fields that carry a platform's numeric id (esputnik's profileInputId), by that number."""
    fields = session.scalars(
        select(ContactField).where(ContactField.workspace_id == workspace_id, ContactField.number.is_not(None))
    )
    return {field.number: field for field in fields if field.number is not None}


def _empty(value: JsonValue) -> bool:
    return value is None or value == "" or value == []


def check_overrides(field_types: dict[str, str], overrides: list[FieldOverride], where: str) -> list[FieldOverride]:
    """Overrides of known fields with values in stored form; unknown names are dropped, misfits refused."""
    checked: list[FieldOverride] = []
    errors: list[FieldError] = []
    for index, override in enumerate(overrides):
        field_type = field_types.get(override.name)
        if field_type is None:
            continue
        try:
            value = coerce_field_value(field_type, override.value)
        except ValueError as exc:
            errors.append(FieldError(field=f"{where}[{index}].value", message=f"{override.name} ({field_type}): {exc}"))
            continue
        checked.append(override.model_copy(update={"value": value}))
    if errors:
        raise InvalidRequest.listing(errors)
    return checked


def apply_field_options(contact: Contact, overrides: list[FieldOverride], *, now: datetime) -> None:
    """Store what options 0 (only into an empty field) and 2 (always) store; option 1 is for the message alone."""
    stored = dict(contact.fields)
    for override in overrides:
        if override.option.overwrites or (override.option.stores and _empty(stored.get(override.name))):
            stored[override.name] = override.value
    if stored != contact.fields:
        contact.fields = stored
        contact.updated_at = now


def message_field_values(stored: dict[str, JsonValue], overrides: list[FieldOverride]) -> dict[str, JsonValue]:
    """The values a message shows for the overridden fields: the request's for options 1 and 2, else stored."""
    values = {override.name: stored.get(override.name) for override in overrides}
    values |= {override.name: override.value for override in overrides if override.option.shows}
    return values


def typed_contact_fields(
    field_types: dict[str, str], values: dict[str, JsonValue], where: str = "contact.fields"
) -> dict[str, JsonValue]:
    """The values with declared fields in stored form, undeclared ones as given; InvalidRequest names misfits."""
    typed: dict[str, JsonValue] = {}
    errors: list[FieldError] = []
    for name, value in values.items():
        if name not in field_types:
            typed[name] = value
            continue
        try:
            typed[name] = coerce_field_value(field_types[name], value)
        except ValueError as exc:
            errors.append(FieldError(field=f"{where}.{name}", message=f"{field_types[name]} field: {exc}"))
    if errors:
        raise InvalidRequest.listing(errors)
    return typed
