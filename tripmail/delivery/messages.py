"""Messages: planned in one transaction, claimed in the next, then each handed over, sent and marked.

Claim, commit, send, mark: a message is only sent by the task run that moved it from pending to sending, so
a redelivered task cannot send it again. Before its DATA goes out, each message's hand-over is committed;
a run that dies therefore leaves two kinds of claimed message behind, which the next try of the same task
tells apart: not handed over (sent again) and handed over without a recorded reply (marked unknown, never
sent again, because the server may have it).
"""

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import base64mime
from email.header import Header
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import Compat32
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from typing import Any, NamedTuple, Protocol

from sqlalchemy import Connection, bindparam, insert, or_, select, update
from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from tripmail.automations.program import Started, messages_by_lane, transactional_steps
from tripmail.contacts.fields import message_field_values
from tripmail.contacts.identity import normalize_email
from tripmail.contacts.unsubscribe import ONE_CLICK, unsubscribe_token, unsubscribe_url
from tripmail.db import engine_of, insert_new
from tripmail.delivery.retries import RetryPolicy
from tripmail.delivery.smtp import Envelope, JournalUnavailable, Outcome, SendingLoop, SendResult, wire_form
from tripmail.delivery.suppressions import ADDRESS_SUPPRESSED, suppress, suppressed_addresses
from tripmail.delivery.verp import verp_address
from tripmail.metrics import delivery_metrics
from tripmail.models import (
    Automation,
    AutomationStep,
    Base,
    Contact,
    Event,
    Message,
    MessageAttempt,
    MessageStatus,
    Template,
    Workspace,
    table_of,
)
from tripmail.queue import ByLane
from tripmail.rendering.attachments import EncodedAttachment, encode_attachment
from tripmail.rendering.templates import RenderedEmail, RenderError, render_email, template_context
from tripmail.schemas.trigger import ChannelFilter, TriggerContent
from tripmail.webhooks.delivery_events import announce, announce_by_workspace, event_type_of

log = logging.getLogger(__name__)

# Why a claimed message ended as unknown when its run stopped between hand-over and reply.
STOPPED_AFTER_HAND_OVER = (
    "delivery stopped after handing the message to the SMTP server and before its reply was recorded; "
    "the server may have accepted it, so it is not sent again"
)


class Recipient(Protocol):
    """What planning a message reads of a contact: a Contact, or just these columns of one."""

    @property
    def id(self) -> str: ...
    @property
    def email(self) -> str | None: ...
    @property
    def consents(self) -> dict[str, Any]: ...


def recipient(contact: Recipient, channel_filter: ChannelFilter | None) -> str | None:
    """The address to mail, or None when the trigger's subscription filter rules the contact out.

    A filter naming another email, a phone or a push subscription names no email subscription of this contact:
    `not_strict` then allows the contact's own email ("another fitting subscription"), strict skips the contact.
    """
    if contact.email is None:
        return None
    if channel_filter is None or channel_filter.not_strict:
        return contact.email
    named = channel_filter.email
    return contact.email if named is not None and normalize_email(named) == contact.email else None


def plan_messages(
    session: Session,
    workspace_id: int,
    event_id: str,
    contacts: Sequence[Recipient],
    automations: list[Started],
    channel_filter: ChannelFilter | None = None,
    *,
    now: datetime,
    suppressed: set[str] | None = None,
) -> ByLane:
    """One pending message per send_email step of each automation that may mail each contact; their new ids.

    One statement per lane; a message that exists already (a chunk planned twice) is skipped by its key.
    `suppressed` may bring the workspace's suppressed addresses among these contacts, looked up already.
    """
    if suppressed is None:
        addresses = {recipient(contact, channel_filter) for contact in contacts}
        suppressed = suppressed_addresses(session, workspace_id, {address for address in addresses if address})
    rows = message_rows(workspace_id, event_id, contacts, automations, channel_filter, now=now, suppressed=suppressed)
    return add_messages(session, rows, transactional_steps=transactional_steps(automations))


def message_rows(
    workspace_id: int,
    event_id: str,
    contacts: Sequence[Recipient],
    automations: list[Started],
    channel_filter: ChannelFilter | None,
    *,
    now: datetime,
    suppressed: set[str],
) -> list[dict[str, Any]]:
    """The rows plan_messages inserts, for callers that insert the messages of several events at once.

    `suppressed`: the workspace's suppressed addresses (among these contacts' at least).
    """
    rows = []
    for contact in contacts:
        address = recipient(contact, channel_filter)
        if address is None:
            continue
        refused_marketing = contact.consents.get("email") is False
        for automation in automations:
            # Hard bounces stay suppressed for transactional mail too: mailing a dead address only hurts the sender.
            rows += [
                {
                    "workspace_id": workspace_id,
                    "event_id": event_id,
                    "automation_id": automation.id,
                    "step_id": step.id,
                    "contact_id": contact.id,
                    "template_id": step.template_id,
                    "to_address": address,
                    "status": MessageStatus.SUPPRESSED if address in suppressed else MessageStatus.PENDING,
                    "attempts": 0,
                    "created_at": now,
                    "updated_at": now,
                }
                for step in automation.send_steps
                if automation.transactional or step.transactional or not refused_marketing
            ]
    return rows


def add_messages(session: Session, rows: list[dict[str, Any]], *, transactional_steps: Collection[int]) -> ByLane:
    """Insert message_rows, a statement per lane, skipping those whose key exists; the ids of the new pending ones,
    by lane. `transactional_steps`: those of the rows' steps whose mail is transactional (see transactional_steps)."""
    transactional = [row for row in rows if row["step_id"] in transactional_steps]
    bulk = [row for row in rows if row["step_id"] not in transactional_steps]
    return ByLane(_insert_messages(session, transactional), _insert_messages(session, bulk))


def _insert_messages(session: Session, rows: list[dict[str, Any]]) -> list[int]:
    """Insert rows in one statement, skipping those whose key exists; the ids of the new pending ones. The new
    suppressed ones are announced (delivery_events) as of their creation."""
    inserted = insert_new(session, Message, rows, ["event_id", "automation_id", "step_id", "contact_id"], "id")
    if all(row["status"] is MessageStatus.PENDING for row in rows):
        return inserted
    added = session.execute(
        select(Message.id, Message.workspace_id, Message.status, Message.created_at).where(Message.id.in_(inserted))
    ).all()
    suppressed = [(key, workspace_id) for key, workspace_id, status, _ in added if status == MessageStatus.SUPPRESSED]
    if suppressed:
        now = added[0].created_at
        announce_by_workspace(session, suppressed, event_type_of(MessageStatus.SUPPRESSED), now=now)
    return [key for key, _, status, _ in added if status == MessageStatus.PENDING]


def pending_message_ids(session: Session, event_id: str) -> ByLane:
    return messages_by_lane(session, (Message.event_id == event_id) & (Message.status == MessageStatus.PENDING))


# The statements a delivery runs for every batch are built once: on SQLite, building an ORM statement took longer
# than running it (350 against 100 µs for a select by key, measured here), and a one-message batch runs several.
_MESSAGES = table_of(Message)
_ATTEMPTS = table_of(MessageAttempt)

_CLAIM = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id.in_(bindparam("ids", expanding=True)), _MESSAGES.c.status == MessageStatus.PENDING)
    .values(
        status=MessageStatus.SENDING,
        attempts=_MESSAGES.c.attempts + 1,
        claimed_by=bindparam("run"),
        handed_over_at=None,
        updated_at=bindparam("now"),
    )
    .returning(
        _MESSAGES.c.id,
        _MESSAGES.c.attempts,
        _MESSAGES.c.workspace_id,
        _MESSAGES.c.to_address,
        _MESSAGES.c.event_id,
        _MESSAGES.c.give_up_at,
    )
)

_LEFT_CLAIMED = select(_MESSAGES.c.id, _MESSAGES.c.handed_over_at, _MESSAGES.c.workspace_id).where(
    _MESSAGES.c.claimed_by == bindparam("run"), _MESSAGES.c.status == MessageStatus.SENDING
)

# Due at once: the scheduler hands them out again unless the run that settles them sends them first.
_RELEASE = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=MessageStatus.PENDING,
        attempts=_MESSAGES.c.attempts - 1,
        next_attempt_at=bindparam("now"),
        enqueued_at=None,
        updated_at=bindparam("now"),
    )
)

_MARK_UNKNOWN = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id.in_(bindparam("ids", expanding=True)))
    .values(
        status=MessageStatus.UNKNOWN, smtp_code=None, smtp_reply=STOPPED_AFTER_HAND_OVER, updated_at=bindparam("now")
    )
)

# By id, a row per parameter set, rather than `id IN (...)`: a hand-over is mostly one message, and expanding
# the IN list cost a fifth of its transaction.
_HAND_OVER = update(_MESSAGES).where(_MESSAGES.c.id == bindparam("message")).values(handed_over_at=bindparam("at"))

_SET_MESSAGE_ID = (
    update(_MESSAGES).where(_MESSAGES.c.id == bindparam("message")).values(message_id_header=bindparam("header"))
)

_SET_OUTCOME = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id == bindparam("message"))
    .values(
        status=bindparam("new_status"),
        smtp_code=bindparam("code"),
        smtp_reply=bindparam("reply"),
        sent_at=bindparam("sent"),
        relay=bindparam("relay"),
        next_attempt_at=bindparam("next_attempt"),
        give_up_at=bindparam("give_up"),
        enqueued_at=None,
        updated_at=bindparam("now"),
    )
)

_ADD_ATTEMPT = insert(_ATTEMPTS)

# A message planned before its address was suppressed (one waiting for its next try, for a run's wait, or in a
# long fan-out) is not sent after all.
_SUPPRESS_PENDING = (
    update(_MESSAGES)
    .where(
        _MESSAGES.c.id.in_(bindparam("ids", expanding=True)),
        _MESSAGES.c.status == MessageStatus.PENDING,
        ADDRESS_SUPPRESSED,
    )
    .values(status=MessageStatus.SUPPRESSED, next_attempt_at=None, updated_at=bindparam("now"))
    .returning(_MESSAGES.c.id, _MESSAGES.c.workspace_id)
)


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


# Columns rather than entities: building five ORM objects per message was a fifth of preparing a batch.
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
# altcraft `custom_request` with 20,000 ids in `$in`), and decoding it per message was 40% of a worker's time.
_EVENT_REQUESTS = select(table_of(Event).c.id, table_of(Event).c.request).where(
    table_of(Event).c.id.in_(bindparam("ids", expanding=True))
)


class Claim(NamedTuple):
    """What recording the result of a claimed message needs of it, returned by the claim rather than read again."""

    attempts: int  # this one counted
    workspace_id: int
    to_address: str
    event_id: str
    give_up_at: datetime | None  # set by the first transient failure


def claim_messages(session: Session, message_ids: list[int], *, run_id: str, now: datetime) -> dict[int, Claim]:
    """Move pending messages to sending for one run; only the messages returned here (by id, in id order) may be
    sent by that run."""
    if not message_ids:
        return {}
    rows = session.execute(_CLAIM, {"ids": message_ids, "run": run_id, "now": now})
    return {message_id: Claim(*claim) for message_id, *claim in sorted(rows)}


def settle_unfinished(session: Session, *, run_id: str, now: datetime) -> list[int]:
    """Close the claims a run left open: not handed over -> pending again; handed over -> unknown.

    Run before a run claims (an earlier try of the same task may have died mid-send) and after it sent (its
    deadline may have stopped it). Returns the ids made pending again.
    """
    left = session.execute(_LEFT_CLAIMED, {"run": run_id}).all()
    if not left:
        return []
    # The claim counted an attempt that never reached the server: it is given back with the claim.
    released = sorted(message_id for message_id, handed_over_at, _ in left if handed_over_at is None)
    handed_over = sorted((message_id, workspace) for message_id, at, workspace in left if at is not None)
    unknown = [message_id for message_id, _ in handed_over]
    if released:
        session.execute(_RELEASE, {"ids": released, "now": now})
    if unknown:
        session.execute(_MARK_UNKNOWN, {"ids": unknown, "now": now})
        announce_by_workspace(session, handed_over, event_type_of(MessageStatus.UNKNOWN), now=now)
        session.execute(
            _ADD_ATTEMPT,
            [
                {
                    "message_id": message_id,
                    "attempted_at": now,
                    "outcome": Outcome.UNKNOWN,
                    "smtp_code": None,
                    "smtp_reply": STOPPED_AFTER_HAND_OVER,
                }
                for message_id in unknown
            ],
        )
    return released


def give_up_run(
    session: Session,
    *,
    run_id: str,
    reason: str,
    now: datetime,
    message_ids: Collection[int] = (),
    event_ids: Collection[str] = (),
) -> None:
    """Fail, with `reason`, the messages a task run would have sent that no other run holds: those it claimed and did
    not hand over, and the pending ones among `message_ids` or of `event_ids`. Those it handed over become unknown,
    as settle_unfinished leaves them. For a task that is not run again (its process died under it too often)."""
    released = settle_unfinished(session, run_id=run_id, now=now)
    ids = [*released, *message_ids]
    whose = [_MESSAGES.c.id.in_(ids)] if ids else []
    if event_ids:
        whose.append(_MESSAGES.c.event_id.in_(list(event_ids)))
    if not whose:
        return
    failed = session.execute(
        update(_MESSAGES)
        .where(_MESSAGES.c.status == MessageStatus.PENDING, or_(*whose))
        .values(status=MessageStatus.FAILED, smtp_code=None, smtp_reply=reason, next_attempt_at=None, updated_at=now)
        .returning(_MESSAGES.c.id, _MESSAGES.c.workspace_id)
    )
    announce_by_workspace(
        session, [(key, workspace) for key, workspace in failed], event_type_of(MessageStatus.FAILED), now=now
    )


class _WirePolicy(Compat32):
    """compat32 with CRLF, writing a short ASCII header as it is instead of through email.header.Header.

    Header folding took a sixth of a delivery's CPU and leaves such a header unchanged anyway: it only splits
    lines longer than max_line_length and encodes non-ASCII text, which the slow path still does.
    """

    def fold_binary(self, name: str, value: Any) -> bytes:
        if isinstance(value, str) and value.isascii():
            limit = self.max_line_length
            if limit is None or len(name) + len(value) + 2 <= limit:
                return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


# The legacy (compat32) MIME classes build and flatten a message several times faster than EmailMessage with a
# modern policy (1.0 vs 3.9 ms for the quickstart's two parts here), which dominated a delivery's CPU. Their
# one gap, that they let a header value carry a line break, is closed by _refuse_line_breaks below.
_WIRE = _WirePolicy(linesep="\r\n")


@lru_cache(maxsize=16)
def _date_header(now: datetime) -> str:
    """A batch's messages share `now`: formatted once, not for each of them."""
    return format_datetime(now)


@lru_cache(maxsize=256)
def _envelope_address(from_header: str) -> str:
    """The address of a From header (`Name <a@b>` -> `a@b`); a workspace's sender is parsed once, not per message."""
    return parseaddr(from_header)[1]


def _refuse_line_breaks(value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(f"header value {value!r} contains a linefeed or carriage return")


def _header(value: str) -> str | Header:
    _refuse_line_breaks(value)
    return value if value.isascii() else Header(value, "utf-8")


def _address_header(value: str) -> str:
    _refuse_line_breaks(value)
    if value.isascii():
        return value
    name, address = parseaddr(value)
    return formataddr((name, address), charset="utf-8")


def build_email(
    *,
    sender: str,
    recipient: str,
    rendered: RenderedEmail,
    message_id: str,
    now: datetime,
    attachments: tuple[EncodedAttachment, ...] = (),
    unsubscribe: str | None = None,
) -> tuple[bytes, ...]:
    """The message as it goes over SMTP, in pieces (an Envelope's content): each attachment's body is its shared
    bytes, not a copy. `unsubscribe` (marketing mail only) adds RFC 8058 one-click headers."""
    parts: list[MIMEBase] = [
        _text_part(body, subtype)
        for body, subtype in ((rendered.text, "plain"), (rendered.html, "html"))
        if body is not None
    ]
    body: MIMEBase = parts[0] if len(parts) == 1 else MIMEMultipart("alternative", _boundary(), _subparts=parts)
    if attachments:
        files = [_attachment_part(attachment) for attachment in attachments]
        body = MIMEMultipart("mixed", _boundary(), _subparts=[body, *files])
    # typeshed types these headers as str; compat32 takes a Header too, and folds it into RFC 2047 words.
    body["From"] = _address_header(sender)
    body["To"] = _address_header(recipient)
    body["Subject"] = _header(rendered.subject)  # type: ignore[assignment]
    body["Date"] = _date_header(now)
    body["Message-ID"] = _header(message_id)  # type: ignore[assignment]
    if unsubscribe is not None:
        body["List-Unsubscribe"] = _header(f"<{unsubscribe}>")  # type: ignore[assignment]
        body["List-Unsubscribe-Post"] = ONE_CLICK
    around = body.as_bytes(policy=_WIRE).split(_ATTACHMENT_BODY.encode("ascii"))
    if len(around) != len(attachments) + 1:
        raise ValueError("a header value contains the attachments' placeholder")
    pieces = [wire_form(around[0])]
    for attachment, after in zip(attachments, around[1:], strict=True):
        # Base64 in CRLF lines: in wire form already, and too large to look through per message.
        pieces += [attachment.body, wire_form(after)]
    return tuple(pieces)


# Random per process and counted, so nested multiparts differ: a uuid4 per boundary read the kernel's random source
# for every message (2 % of a batch's time). Two messages may share one; it only has to differ within a message.
# Short enough that the Content-Type header fits on one line: folding it took the email package's slow path.
_BOUNDARY_PREFIX = f"=_{uuid.uuid4().hex[:16]}."
_boundary_numbers = itertools.count()


def _text_part(body: str, subtype: str) -> MIMEBase:
    """What MIMEText(body, subtype, "utf-8") makes, byte for byte, at a sixth of its cost (7 against 42 µs here):
    MIMEText writes the charset parameter twice, parsing the header back the second time."""
    part = MIMENonMultipart("text", subtype, charset="utf-8")
    part["Content-Transfer-Encoding"] = "base64"
    part.set_payload(base64mime.body_encode(body.encode("utf-8")))
    return part


def _boundary() -> str:
    """A fresh boundary, so the generator does not make one: it compiles a regular expression for each it makes.

    It cannot occur in the parts, which are all base64 (utf-8 text and attachments), an alphabet without '-'.
    """
    return f"{_BOUNDARY_PREFIX}{next(_boundary_numbers)}"


# Stands for an attachment's body while the email package writes the message around it (it would take seconds to
# write 10 MiB of base64 itself): random per process and never sent, so no header can know it.
_ATTACHMENT_BODY = f"attachment-body-{uuid.uuid4().hex}"


def _attachment_part(attachment: EncodedAttachment) -> MIMEBase:
    maintype, _, subtype = attachment.content_type.partition("/")
    part = MIMEBase(maintype, subtype)
    part["Content-Transfer-Encoding"] = "base64"
    part.set_payload(_ATTACHMENT_BODY)
    name = attachment.name
    # RFC 2231 for a name that is not ASCII (altcraft's clients send unicode file names).
    part.add_header("Content-Disposition", "attachment", filename=name if name.isascii() else ("utf-8", "", name))
    return part


def message_id_header(event_id: str, message_id: int, sender_address: str) -> str:
    """Deterministic, so a receiving system can tell a resend of the same message."""
    domain = sender_address.rpartition("@")[2] or "tripmail.localhost"
    return f"<{event_id}.{message_id}@{domain}>"


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
    return {
        "id": event.id,
        "name": event.name,
        "key": event.key,
        "received_at": event.received_at.isoformat(),
    }


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


def record_progress(
    connection: Connection,
    *,
    handed_over: list[int],
    withdrawn: list[int],
    results: list[SendResult],
    claims: Mapping[int, Claim],
    now: datetime,
    retries: RetryPolicy,
) -> list[int]:
    """Write down hand-overs, hand-overs that did not happen after all, and results; the ids to try again later.

    A Connection rather than a Session: a message's journal is a transaction of its own, and a Session cost as
    much again as the statements (586 against 377 µs for a hand-over and a result).
    """
    if handed_over:
        connection.execute(_HAND_OVER, [{"message": key, "at": now} for key in handed_over])
    if withdrawn:
        connection.execute(_HAND_OVER, [{"message": key, "at": None} for key in withdrawn])
    return record_results(connection, results, claims, now=now, retries=retries)


def record_results(
    connection: Connection,
    results: list[SendResult],
    claims: Mapping[int, Claim],
    *,
    now: datetime,
    retries: RetryPolicy,
) -> list[int]:
    """Mark each claimed message by its outcome, announcing the sent, failed and unknown ones (delivery_events);
    return the ids that failed transiently and wait for their next try (the scheduler hands them out when it is
    due)."""
    if not results:
        return []
    retry = []
    outcomes = []
    ended: dict[tuple[int, MessageStatus], list[int]] = {}
    for result in results:
        claim = claims[result.key]
        reply = result.reply
        next_attempt = None
        give_up_at = claim.give_up_at
        if result.outcome is Outcome.SENT:
            status = MessageStatus.SENT
        elif result.outcome is Outcome.UNKNOWN:
            status = MessageStatus.UNKNOWN
        elif result.outcome is Outcome.TRANSIENT:
            give_up_at = give_up_at or retries.give_up_at(now)
            next_attempt = retries.next_attempt(failures=claim.attempts, give_up_at=give_up_at, now=now)
            if next_attempt is not None:
                status = MessageStatus.PENDING
                retry.append(result.key)
            else:
                status = MessageStatus.FAILED
                reply = (
                    f"gave up after {claim.attempts} attempt(s), still failing at {now:%Y-%m-%d %H:%M:%S} UTC: {reply}"
                )
        else:
            status = MessageStatus.FAILED
            if result.refuses_recipient:
                suppress(connection, claim.workspace_id, claim.to_address, f"{result.stage}: {result.reply}", now=now)
        if status is not MessageStatus.PENDING:
            ended.setdefault((claim.workspace_id, status), []).append(result.key)
        outcomes.append(
            {
                "message": result.key,
                "new_status": status,
                "code": result.code,
                "reply": reply,
                "sent": now if status is MessageStatus.SENT else None,
                "relay": result.relay,
                "next_attempt": next_attempt,
                "give_up": give_up_at,
                "now": now,
            }
        )
    connection.execute(_SET_OUTCOME, outcomes)
    for (workspace_id, status), message_ids in ended.items():
        announce(connection, workspace_id, message_ids, event_type_of(status), now=now)
    connection.execute(
        _ADD_ATTEMPT,
        [
            {
                "message_id": result.key,
                "attempted_at": now,
                "outcome": result.outcome,
                "relay": result.relay,
                "smtp_code": result.code,
                "smtp_reply": result.reply,
            }
            for result in results
        ],
    )
    return retry


# How long a result waits for a hand-over's transaction to ride in before it is written on its own.
RESULTS_WAIT_S = 0.02
# How many results a hand-over's transaction waits for before it takes them: a row more in a statement costs
# far less than the statement (per message, 352 µs with each hand-over, 242 with every fourth, measured here).
RESULTS_TOGETHER = 4


class DatabaseJournal:
    """Writes each message's progress as it happens, many messages to one transaction (a group commit).

    A hand-over is waited for, because it must be committed before the message goes out. Results are not: they
    are written with a hand-over once RESULTS_TOGETHER of them wait, or RESULTS_WAIT_S after the first came
    (and at flush), in the order they came. Writing each as it came cost a transaction per result, 29 % of a
    batch's CPU. Until it is written, a worker that dies leaves the message `unknown`, as one that dies while its
    message is with the server does: the wait keeps that window short.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        claims: Mapping[int, Claim],
        *,
        clock: Callable[[], datetime],
        retries: RetryPolicy,
    ) -> None:
        self._engine = engine_of(sessions)
        self._claims = claims
        self._clock = clock
        self._retries = retries
        self._handovers: list[tuple[int, asyncio.Future[None]]] = []
        self._withdrawn: list[int] = []
        self._results: list[SendResult] = []
        self._writer: asyncio.Task[None] | None = None
        self._results_timer: asyncio.TimerHandle | None = None
        self._failure: SQLAlchemyError | None = None
        self.retry_ids: list[int] = []

    async def handing_over(self, key: int) -> None:
        written: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._handovers.append((key, written))
        self._wake()
        await written

    def record(self, result: SendResult) -> None:
        self._results.append(result)
        self._write_results_soon()

    def _write_results_soon(self) -> None:
        if self._results_timer is None:
            self._results_timer = asyncio.get_running_loop().call_later(RESULTS_WAIT_S, self._write_results)

    def _write_results(self) -> None:
        self._results_timer = None
        if (self._results or self._withdrawn) and not self._wake(results_too=True):
            self._write_results_soon()  # the write under way takes hand-overs only: look again after it

    async def flush(self, *, until: float | None = None) -> None:
        """Wait until everything is written; raise the database's error if it cannot be.

        While the database is unreachable (or SQLite's write lock stays taken), the writing is tried again until
        `until` (time.monotonic()). The results are the server's replies: once this run is gone they are lost, and
        a message handed over without its result written is left `unknown` by the next try (never sent twice,
        but an operator must look). A PostgreSQL restart of a few seconds during delivery left them so.
        """
        if self._results_timer is not None:
            self._results_timer.cancel()
            self._results_timer = None
        if self._writer is not None:
            await self._writer
        pause = 0.1
        while self._results or self._withdrawn:
            self._failure = None
            await self._write_all(results_too=True)
            if self._failure is None or not _transient(self._failure):
                break
            if until is None or time.monotonic() + pause > until:
                break
            log.warning(
                "could not record the results of %d message(s), trying again in %.1f s: %s",
                len(self._results),
                pause,
                self._failure,
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
        if self._failure is not None:
            raise self._failure

    def _wake(self, *, results_too: bool = False) -> bool:
        """Start a writer unless one is under way; whether it started one."""
        if self._writer is not None and not self._writer.done():
            return False
        self._writer = asyncio.get_running_loop().create_task(self._write_all(results_too=results_too))
        return True

    async def _write_all(self, *, results_too: bool = False) -> None:
        # Results (and withdrawn hand-overs) alone wait for the next hand-over, or for flush.
        while self._handovers or (results_too and (self._results or self._withdrawn)):
            handovers, self._handovers = self._handovers, []
            results: list[SendResult] = []
            withdrawn: list[int] = []
            if results_too or len(self._results) >= RESULTS_TOGETHER:
                results, self._results = self._results, []
                withdrawn, self._withdrawn = self._withdrawn, []
            # A sender stopped by the deadline while it waited has nothing to write down.
            waiting = [(key, written) for key, written in handovers if not written.done()]
            try:
                retry = await asyncio.to_thread(self._write, [key for key, _ in waiting], withdrawn, results)
            except SQLAlchemyError as exc:
                self._failure = exc
                for _, written in waiting:
                    if not written.done():
                        written.set_exception(JournalUnavailable(f"{type(exc).__name__}: {exc}"))
                self._results[:0] = results
                self._withdrawn[:0] = withdrawn
                return
            self.retry_ids += retry
            for key, written in waiting:
                if written.cancelled():
                    self._withdrawn.append(key)  # written down, but its sender was stopped before DATA
                else:
                    written.set_result(None)

    def _write(self, handed_over: list[int], withdrawn: list[int], results: list[SendResult]) -> list[int]:
        with self._engine.begin() as connection:
            return record_progress(
                connection,
                handed_over=handed_over,
                withdrawn=withdrawn,
                results=results,
                claims=self._claims,
                now=self._clock(),
                retries=self._retries,
            )


def _transient(exc: SQLAlchemyError) -> bool:
    """The database was unreachable or locked, rather than refusing what was written."""
    return isinstance(exc, OperationalError) or bool(getattr(exc, "connection_invalidated", False))


def _log_result(result: SendResult, claim: Claim) -> None:
    # The SMTP reply is the server's; the message's content never goes to the log.
    log.info(
        "message %d %s: %s",
        result.key,
        result.outcome,
        result.reply,
        extra={
            "workspace_id": claim.workspace_id,
            "event_id": claim.event_id,
            "message_id": result.key,
            "outcome": result.outcome.value,
            "smtp_code": result.code,
            "attempt": claim.attempts,
        },
    )


@dataclass(frozen=True)
class DeliveryReport:
    sent: int
    failed: int
    unknown: int
    retry_ids: list[int]


def deliver_messages(
    sessions: sessionmaker[Session],
    message_ids: list[int],
    *,
    run_id: str,
    sending: SendingLoop,
    deadline: float,
    retries: RetryPolicy,
    public_url: str,
    clock: Callable[[], datetime],
    settled: bool = False,
    record_for: float | None = None,
    bounce_domain: str | None = None,
) -> DeliveryReport:
    """Claim and render, commit, then for each message: commit its hand-over, send it, record its result.

    `run_id` names this delivery across its retries and redeliveries (the Celery task id), so a later try
    can settle what an earlier one that died left claimed; `settled` when the caller did that already in this
    run (process_events did). Sending stops after `deadline` seconds; results that could not be written because
    the database was away are tried again until `record_for` seconds (from the call) have passed.
    """
    started = time.monotonic()
    # Rendered before the claim, outside the write: on SQLite a write transaction holds the one write lock, and
    # rendering a batch takes far longer than claiming it.
    with sessions() as session:
        rendered = prepare_envelopes(
            session, message_ids, now=clock(), public_url=public_url, bounce_domain=bounce_domain
        )
    with sessions.begin() as session:
        if not settled:
            settle_unfinished(session, run_id=run_id, now=clock())
            # A settled run's messages were planned by it just now, against the suppressions of now.
            now = clock()
            suppressed = [
                (key, workspace)
                for key, workspace in session.execute(_SUPPRESS_PENDING, {"ids": message_ids, "now": now})
            ]
            announce_by_workspace(session, suppressed, event_type_of(MessageStatus.SUPPRESSED), now=now)
        claimed = claim_messages(session, message_ids, run_id=run_id, now=clock())
        prepared = rendered.claimed(claimed)
        if prepared.message_id_headers:
            headers = [{"message": key, "header": header} for key, header in prepared.message_id_headers.items()]
            session.execute(_SET_MESSAGE_ID, headers)
    if not claimed:
        return DeliveryReport(sent=0, failed=0, unknown=0, retry_ids=[])
    journal = DatabaseJournal(sessions, claimed, clock=clock, retries=retries)

    async def send_recorded() -> list[SendResult]:
        for failure in prepared.failures:
            journal.record(failure)
        results = list(prepared.failures)
        if prepared.envelopes:
            results += await sending.relays.send_all(prepared.envelopes, deadline=deadline, journal=journal)
        await journal.flush(until=started + (record_for if record_for is not None else deadline))
        return results

    results = sending.run(send_recorded())
    released = []
    if len(results) < len(claimed):
        # The deadline stopped the sending: settle the messages it left without a result.
        with sessions.begin() as session:
            released = settle_unfinished(session, run_id=run_id, now=clock())
    for result in results:
        delivery_metrics().delivered.labels(result.outcome).inc()
        _log_result(result, claimed[result.key])
    delivery_metrics().retries.inc(len(journal.retry_ids))
    sent = sum(1 for result in results if result.outcome is Outcome.SENT)
    unknown = sum(1 for result in results if result.outcome is Outcome.UNKNOWN)
    failed = len(results) - sent - unknown - len(journal.retry_ids)
    return DeliveryReport(sent=sent, failed=failed, unknown=unknown, retry_ids=journal.retry_ids + released)
