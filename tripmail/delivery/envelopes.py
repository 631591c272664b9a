"""Envelopes: a batch's messages read, rendered and built for SMTP, before any of them is claimed.

Apart from the claims: it writes nothing, so it runs outside the write transaction (on SQLite a write holds the
one write lock, and rendering a batch takes far longer than claiming it).
"""

import itertools
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import parseaddr
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from tripmail.contacts.fields import message_field_values
from tripmail.contacts.unsubscribe import unsubscribe_token, unsubscribe_url
from tripmail.delivery.mime import build_email, message_id_header
from tripmail.delivery.smtp import Envelope, Outcome, SendResult
from tripmail.delivery.verp import verp_address
from tripmail.models import Automation, AutomationStep, Base, Contact, Event, Message, Template, Workspace, table_of
from tripmail.rendering.attachments import EncodedAttachment, encode_attachment
from tripmail.rendering.context import contact_context, event_context
from tripmail.rendering.templates import RenderedEmail, RenderError, render_email, template_context
from tripmail.schemas.trigger import TriggerContent

_MESSAGES = table_of(Message)


class _Contact(NamedTuple):
    id: str
    email: str | None
    phone: str | None
    external_id: str | None
    fields: dict[str, Any]


class _Event(NamedTuple):
    id: str
    name: str
    key: str | None
    received_at: datetime


class _Template(NamedTuple):
    key: str
    subject: str
    html: str | None
    text: str | None
    syntax: str
    data_param: str | None


class _Sender(NamedTuple):
    id: int
    from_address: str
    unsubscribe_secret: str


def _columns(model: type[Base], names: type[NamedTuple]) -> list[Any]:
    return [table_of(model).c[name] for name in names._fields]


# Columns rather than entities: building five ORM objects per message is a large share of preparing a batch.
_TO_PREPARE = (
    select(
        _MESSAGES.c.id,
        _MESSAGES.c.to_address,
        table_of(Automation).c.transactional,
        table_of(AutomationStep).c.config,
        *_columns(Contact, _Contact),
        *_columns(Event, _Event),
        *_columns(Template, _Template),
        *_columns(Workspace, _Sender),
    )
    .join(table_of(Contact), _MESSAGES.c.contact_id == table_of(Contact).c.id)
    .join(table_of(Event), _MESSAGES.c.event_id == table_of(Event).c.id)
    .join(table_of(Template), _MESSAGES.c.template_id == table_of(Template).c.id)
    .join(table_of(Workspace), _MESSAGES.c.workspace_id == table_of(Workspace).c.id)
    .join(table_of(Automation), _MESSAGES.c.automation_id == table_of(Automation).c.id)
    .join(table_of(AutomationStep), _MESSAGES.c.step_id == table_of(AutomationStep).c.id)
    .where(_MESSAGES.c.id.in_(bindparam("ids", expanding=True)))
)

# An event's request is read once per batch, not with each of its messages: an audience request can be large (an
# altcraft `custom_request` with 20,000 ids in `$in`), and decoding it per message would dominate a worker's time.
_EVENT_REQUESTS = select(table_of(Event).c.id, table_of(Event).c.request).where(
    table_of(Event).c.id.in_(bindparam("ids", expanding=True))
)


@lru_cache(maxsize=256)
def _envelope_address(from_header: str) -> str:
    """The address of a From header (`Name <a@b>` -> `a@b`); a workspace's sender is parsed once, not per message."""
    return parseaddr(from_header)[1]


@dataclass(frozen=True)
class _EventParts:
    """What every message of one event shares, decoded and encoded once per batch rather than once per message."""

    content: TriggerContent
    attachments: tuple[EncodedAttachment, ...]

    @classmethod
    def of(cls, request: dict[str, Any]) -> "_EventParts":
        # The rest of the request (the audience's email and phone among it) was validated when it was accepted.
        content = TriggerContent.model_validate(request)
        attachments = tuple(encode_attachment(attachment) for attachment in content.attachments)
        # Their base64 text is not needed again: kept, it would be a second copy for the whole batch.
        return cls(content.model_copy(update={"attachments": []}), attachments)


@dataclass
class Prepared:
    envelopes: list[Envelope] = field(default_factory=list)
    failures: list[SendResult] = field(default_factory=list)
    # Message-ID header by message id, stored with the claim.
    message_id_headers: dict[int, str] = field(default_factory=dict)

    def claimed(self, claimed: Collection[int]) -> "Prepared":
        """Only the messages this run claimed: the others are another run's (or sent already)."""
        mine = set(claimed)
        return Prepared(
            [envelope for envelope in self.envelopes if envelope.key in mine],
            [failure for failure in self.failures if failure.key in mine],
            {key: header for key, header in self.message_id_headers.items() if key in mine},
        )


def prepare_envelopes(
    session: Session, message_ids: list[int], *, now: datetime, public_url: str, bounce_domain: str | None = None
) -> Prepared:
    """Render and build every message; one that cannot be rendered or built fails alone. Writes nothing.

    `public_url` is where recipients reach the api: the unsubscribe links of marketing mail point there.
    `bounce_domain`, when set, makes each envelope's sender the message's VERP address there.
    """
    prepared = Prepared()
    if not message_ids:
        return prepared
    rows = session.execute(_TO_PREPARE, {"ids": message_ids}).all()
    event_ids = {row._mapping[table_of(Event).c.id] for row in rows}
    shared = {
        event_id: _EventParts.of(request)
        for event_id, request in session.execute(_EVENT_REQUESTS, {"ids": list(event_ids)})
    }
    for row in rows:
        columns = iter(row)  # in the order of _TO_PREPARE
        message_id, to_address, transactional, step = next(columns), next(columns), next(columns), next(columns)
        transactional = transactional or step.get("transactional", False)
        contact = _Contact._make(itertools.islice(columns, len(_Contact._fields)))
        event = _Event._make(itertools.islice(columns, len(_Event._fields)))
        template = _Template._make(itertools.islice(columns, len(_Template._fields)))
        sender = _Sender._make(itertools.islice(columns, len(_Sender._fields)))
        parts = shared[event.id]
        unsubscribe = None if transactional else unsubscribe_url(public_url, unsubscribe_token(sender, contact.id))
        sender_address = _envelope_address(sender.from_address)
        header = message_id_header(event.id, message_id, sender_address)
        try:
            rendered = _render(contact, event, template, parts)
            # ValueError: a header the email package refuses (a line break in a name or address).
            content = build_email(
                sender=sender.from_address,
                recipient=to_address,
                rendered=rendered,
                message_id=header,
                now=now,
                attachments=parts.attachments,
                unsubscribe=unsubscribe,
            )
        except (RenderError, ValueError) as exc:
            prepared.failures.append(SendResult(message_id, Outcome.PERMANENT, None, f"template {template.key}: {exc}"))
            continue
        prepared.message_id_headers[message_id] = header
        return_path = (
            sender_address
            if bounce_domain is None
            else verp_address(message_id, sender.unsubscribe_secret, bounce_domain)
        )
        prepared.envelopes.append(Envelope(message_id, return_path, to_address, content))
    return prepared


def _render(contact: _Contact, event: _Event, template: _Template, parts: _EventParts) -> RenderedEmail:
    shown_fields = message_field_values(contact.fields, parts.content.fields)
    context = template_context(
        contact_context(contact) | shown_fields,
        parts.content.data,
        event_context(event),
        shown_fields,
        data_param=template.data_param,
    )
    return render_email(template.subject, template.html, template.text, context, syntax=template.syntax)
