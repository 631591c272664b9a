"""Attachments sent as data URIs (`data:<mime>;base64,<...>`, altcraft's `attach`)."""

import base64
import binascii
import re
from dataclasses import dataclass

from tripmail.errors import FieldError, InvalidRequest
from tripmail.schemas.trigger import Attachment

_DATA_URI = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*);base64,(?P<data>.*)$", re.S)


# A line break would end the Content-Disposition header; NUL and the other controls end or garble a name on disk.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class EncodedAttachment:
    """An attachment with its MIME body as it goes over SMTP: base64 in lines of 76, each ended by a CRLF.

    Encoded once per delivery batch and shared by every message that carries it, so a batch holds one copy of it
    rather than one per recipient (250 of a 10 MiB attachment are 3.4 GiB).
    """

    name: str
    content_type: str
    body: bytes


def parse_attachments(items: list[tuple[str, str]], *, max_total_bytes: int, where: str) -> list[Attachment]:
    """(name, data URI) pairs as attachments; every malformed one, and the one that takes the total over the
    limit, is named by its index."""
    attachments: list[Attachment] = []
    errors: list[FieldError] = []
    total = 0
    for index, (given_name, uri) in enumerate(items):
        name = file_name(given_name)
        if not name or _CONTROL.search(name):
            problem = "control characters in a file name" if name else f"{given_name!r} names no file"
            errors.append(FieldError(field=f"{where}[{index}].name", message=problem))
        match = _DATA_URI.match(uri)
        if match is None:
            errors.append(FieldError(field=f"{where}[{index}].data", message="expected data:<mime>;base64,<data>"))
            continue
        try:
            size = len(base64.b64decode(match["data"], validate=True))
        except (binascii.Error, ValueError):
            errors.append(FieldError(field=f"{where}[{index}].data", message="the base64 part does not decode"))
            continue
        if total <= max_total_bytes < total + size:
            errors.append(
                FieldError(
                    field=f"{where}[{index}].data",
                    message=f"attachments reach {total + size} bytes here; the limit is {max_total_bytes} in all",
                )
            )
        total += size
        content_type = match["type"] or "application/octet-stream"
        if not errors:
            attachments.append(Attachment(name=name, content_type=content_type, content_base64=match["data"]))
    if errors:
        raise InvalidRequest.listing(errors)
    return attachments


def file_name(name: str) -> str:
    """The last part of a path (`../../etc/passwd` -> `passwd`, `C:\\x\\a.pdf` -> `a.pdf`): the name a mail client
    saves the file as, with nothing that points elsewhere."""
    return re.split(r"[\\/]", name)[-1].strip().lstrip(".")


def encode_attachment(attachment: Attachment) -> EncodedAttachment:
    """What the email package writes for the attachment's content (encoders.encode_base64, with CRLF line ends),
    made without it: the package is many times slower at encoding and writing a large attachment
    (bench/results.md, What the code's shape rests on)."""
    content = base64.b64decode(attachment.content_base64)
    body = base64.encodebytes(content).replace(b"\n", b"\r\n")
    return EncodedAttachment(attachment.name, attachment.content_type, body)
