"""What templates and conditions see of a contact and an event: shared by rendering a message and by a run's
conditions, so it lives with neither.
"""

from datetime import datetime
from typing import Any, Protocol


class ContactColumns(Protocol):
    """A contact as templates and conditions see it: a Contact, or these columns of one."""

    @property
    def id(self) -> str: ...
    @property
    def email(self) -> str | None: ...
    @property
    def phone(self) -> str | None: ...
    @property
    def external_id(self) -> str | None: ...
    @property
    def fields(self) -> dict[str, Any]: ...


class EventColumns(Protocol):
    """An event as templates and conditions see it."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def key(self) -> str | None: ...
    @property
    def received_at(self) -> datetime: ...


def contact_context(contact: ContactColumns) -> dict[str, Any]:
    """`contact` in templates and conditions: its fields, with its identifiers over any field of the same name."""
    return {
        **contact.fields,
        "id": contact.id,
        "email": contact.email,
        "phone": contact.phone,
        "external_id": contact.external_id,
    }


def event_context(event: EventColumns) -> dict[str, Any]:
    """`event` in templates and conditions."""
    return {
        "id": event.id,
        "name": event.name,
        "key": event.key,
        "received_at": event.received_at.isoformat(),
    }
