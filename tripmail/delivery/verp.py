"""VERP return paths: each message's envelope sender names the message, so a bounce says which one it is about.

`bounces+<message id>-<signature>@<bounce domain>`: the final MTA writes it as Return-Path and sends its delivery
status notifications there. The signature is an HMAC of the message id under the workspace's secret, so nobody
can forge a bounce for a message they did not receive.
"""

import hmac
import re
from dataclasses import dataclass
from email.utils import parseaddr

from tripmail.contacts.unsubscribe import workspace_signature

LOCAL_PART_PREFIX = "bounces+"
# 48 bits: a forger has to guess it by sending reports one by one, each checked here.
SIGNATURE_LENGTH = 12

_VERP = re.compile(rf"{re.escape(LOCAL_PART_PREFIX)}(\d+)-([0-9a-f]+)@([^@\s]+)", re.IGNORECASE)


def _signature(secret: str, message_id: int) -> str:
    # A payload of its own, so no unsubscribe token's signature is also a valid return path's, or the other way.
    return workspace_signature(secret, f"{LOCAL_PART_PREFIX}{message_id}")[:SIGNATURE_LENGTH]


def verp_address(message_id: int, secret: str, bounce_domain: str) -> str:
    """The envelope sender of one message, signed with its workspace's secret."""
    return f"{LOCAL_PART_PREFIX}{message_id}-{_signature(secret, message_id)}@{bounce_domain}"


@dataclass(frozen=True)
class VerpAddress:
    """A return path as it came back: the message it names, and a signature not checked yet."""

    message_id: int
    signature: str
    domain: str

    def signed_by(self, secret: str) -> bool:
        """Whether the workspace that owns the message made this address."""
        return hmac.compare_digest(self.signature.lower(), _signature(secret, self.message_id))


def parse_verp_address(address: str) -> VerpAddress | None:
    """The return path in `address` (bare, or `Name <address>`); None when it is not one."""
    found = _VERP.fullmatch(parseaddr(address)[1])
    if found is None:
        return None
    message_id, signature, domain = found.groups()
    return VerpAddress(int(message_id), signature, domain.lower())
