"""MIME: a rendered message as it goes over SMTP, built with the email package's fastest paths."""

import itertools
import uuid
from datetime import datetime
from email import base64mime
from email.header import Header
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.policy import Compat32
from email.utils import format_datetime, formataddr, parseaddr
from functools import lru_cache
from typing import Any

from tripmail.contacts.unsubscribe import ONE_CLICK
from tripmail.delivery.smtp import wire_form
from tripmail.rendering.attachments import EncodedAttachment
from tripmail.rendering.templates import RenderedEmail


class _WirePolicy(Compat32):
    """compat32 with CRLF, writing a short ASCII header as it is instead of through email.header.Header.

    Header folding is a large share of a delivery's CPU and leaves such a header unchanged anyway: it only splits
    lines longer than max_line_length and encodes non-ASCII text, which the slow path still does.
    """

    def fold_binary(self, name: str, value: Any) -> bytes:
        if isinstance(value, str) and value.isascii():
            limit = self.max_line_length
            if limit is None or len(name) + len(value) + 2 <= limit:
                return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


# The legacy (compat32) MIME classes build and flatten a message several times faster than EmailMessage with a
# modern policy (bench/results.md, What the code's shape rests on), which would dominate a delivery's CPU. Their
# one gap, that they let a header value carry a line break, is closed by _refuse_line_breaks below.
_WIRE = _WirePolicy(linesep="\r\n")


@lru_cache(maxsize=16)
def _date_header(now: datetime) -> str:
    """A batch's messages share `now`: formatted once, not for each of them."""
    return format_datetime(now)


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


# Random per process and counted, so nested multiparts differ: a uuid4 per boundary reads the kernel's random source
# for every message, a share of a batch's time that buys nothing. Two messages may share one; it only has to differ
# within a message. Short enough that the Content-Type header fits on one line: folding it takes the email package's
# slow path.
_BOUNDARY_PREFIX = f"=_{uuid.uuid4().hex[:16]}."
_boundary_numbers = itertools.count()


def _text_part(body: str, subtype: str) -> MIMEBase:
    """What MIMEText(body, subtype, "utf-8") makes, byte for byte, at a fraction of its cost (bench/results.md,
    What the code's shape rests on): MIMEText writes the charset parameter twice, parsing the header back the second
    time."""
    part = MIMENonMultipart("text", subtype, charset="utf-8")
    part["Content-Transfer-Encoding"] = "base64"
    part.set_payload(base64mime.body_encode(body.encode("utf-8")))
    return part


def _boundary() -> str:
    """A fresh boundary, so the generator does not make one: it compiles a regular expression for each it makes.

    It cannot occur in the parts, which are all base64 (utf-8 text and attachments), an alphabet without '-'.
    """
    return f"{_BOUNDARY_PREFIX}{next(_boundary_numbers)}"


# Stands for an attachment's body while the email package writes the message around it (writing a large
# attachment's base64 itself is slow): random per process and never sent, so no header can know it.
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
