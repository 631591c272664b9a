"""Attachments sent as data URIs (`data:<mime>;base64,<...>`, seed 001's `attach`)."""

import base64
import binascii
import re
from dataclasses import dataclass

from tripmail.errors import FieldError, InvalidRequest
from tripmail.schemas.trigger import Attachment

_DATA_URI = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[^;,]*)*);base64,(?P<data>.*)$", re.S)


@dataclass(frozen=True)
class DecodedAttachment:
    name: str
    content_type: str
    content: bytes


def parse_attachments(items: list[tuple[str, str]], *, max_total_bytes: int, where: str) -> list[Attachment]:
    """(name, data URI) pairs as attachments; every malformed one, and a total over the limit, is named."""
    attachments: list[Attachment] = []
    errors: list[FieldError] = []
    total = 0
    for index, (name, uri) in enumerate(items):
        match = _DATA_URI.match(uri)
        if match is None:
            errors.append(FieldError(field=f"{where}[{index}].data", message="expected data:<mime>;base64,<data>"))
            continue
        try:
            size = len(base64.b64decode(match["data"], validate=True))
        except (binascii.Error, ValueError):
            errors.append(FieldError(field=f"{where}[{index}].data", message="the base64 part does not decode"))
            continue
        total += size
        content_type = match["type"] or "application/octet-stream"
        attachments.append(Attachment(name=name, content_type=content_type, content_base64=match["data"]))
    if total > max_total_bytes:
        errors.append(
            FieldError(field=where, message=f"attachments total {total} bytes; the limit is {max_total_bytes}")
        )
    if errors:
        raise InvalidRequest.listing(errors)
    return attachments


def decode_attachment(attachment: Attachment) -> DecodedAttachment:
    return DecodedAttachment(attachment.name, attachment.content_type, base64.b64decode(attachment.content_base64))
