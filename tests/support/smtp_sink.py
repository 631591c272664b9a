"""An aiosmtpd sink that records what it accepts and refuses addresses by their prefix."""

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    arrived_at: float = field(default_factory=time.monotonic)

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.content, policy=default)
        assert isinstance(parsed, EmailMessage)
        return parsed


# Permanent refusals by the start of an address's local part: one of each kind a relay gives, for each command.
SENDER_REFUSALS = {"refused-sender-": "550 5.7.1 sender rejected"}
RECIPIENT_REFUSALS = {
    "reject-": "550 5.1.1 mailbox unavailable",
    "policy-": "550 5.7.1 message refused as spam",
    "relaydenied-": "554 5.7.1 relay access denied",
    "plain553-": "553 mailbox name not allowed",
}
# Refused after the message content, by its first recipient.
DATA_REFUSALS = {
    "datarefused-": "554 transaction failed",
    "datauser-": "550 5.1.1 user unknown",
}


def _refusal(address: str, refusals: dict[str, str]) -> str | None:
    return next((reply for prefix, reply in refusals.items() if address.startswith(prefix)), None)


class Sink:
    """aiosmtpd handler that records what it accepts.

    A sender or recipient whose local part starts with a prefix of SENDER_REFUSALS, RECIPIENT_REFUSALS or
    DATA_REFUSALS gets that reply to its MAIL, RCPT or DATA, every time; a recipient starting with `flaky-` gets
    421 (and the connection closed) the first time it is offered and 250 after that. While `hold_rcpt` is set,
    RCPT replies are withheld; while `hold_data` is set, a message is stored and the reply to its DATA withheld.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: list[ReceivedMail] = []
        self._refused: Counter[str] = Counter()
        # Kept as mail arrives, so polling for thousands of messages does not rescan them all each time.
        self._counts: dict[str, Counter[str]] = {}
        self._deferred: set[str] = set()
        self.hold_rcpt = threading.Event()
        self.hold_data = threading.Event()
        self._held = 0

    @property
    def held(self) -> int:
        """How many SMTP sessions are waiting for a withheld reply."""
        with self._lock:
            return self._held

    async def _wait_while(self, hold: threading.Event) -> None:
        with self._lock:
            self._held += 1
        try:
            while hold.is_set():
                await asyncio.sleep(0.01)
        finally:
            with self._lock:
                self._held -= 1

    def _refuse(self, address: str, reply: str) -> str:
        with self._lock:
            self._refused[address] += 1
        return reply

    async def handle_MAIL(
        self, server: object, session: object, envelope: object, address: str, options: list[str]
    ) -> str:
        if (refusal := _refusal(address, SENDER_REFUSALS)) is not None:
            return self._refuse(address, refusal)
        # A handler that answers MAIL sets the envelope's sender itself.
        envelope.mail_from = address  # type: ignore[attr-defined]
        envelope.mail_options.extend(options)  # type: ignore[attr-defined]
        return "250 OK"

    async def handle_RCPT(
        self, server: object, session: object, envelope: object, address: str, options: object
    ) -> str:
        if self.hold_rcpt.is_set():
            await self._wait_while(self.hold_rcpt)
        if (refusal := _refusal(address, RECIPIENT_REFUSALS)) is not None:
            return self._refuse(address, refusal)
        if address.startswith("flaky-") and address not in self._deferred:
            self._deferred.add(address)
            return "421 4.3.2 service shutting down, try again later"
        envelope.rcpt_tos.append(address)  # type: ignore[attr-defined]
        return "250 OK"

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        first = envelope.rcpt_tos[0]  # type: ignore[attr-defined]
        if (refusal := _refusal(first, DATA_REFUSALS)) is not None:
            return self._refuse(first, refusal)
        mail = ReceivedMail(envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content)  # type: ignore[attr-defined]
        with self._lock:
            self._received.append(mail)
            self._counts.setdefault(mail.mail_from, Counter()).update(mail.rcpt_tos)
        if self.hold_data.is_set():
            await self._wait_while(self.hold_data)
        return "250 2.0.0 queued"

    def refusals(self, address: str) -> int:
        """How many transactions the sink refused because of `address` (as their sender or recipient)."""
        with self._lock:
            return self._refused[address]

    def count_from(self, sender: str) -> int:
        """How many deliveries (message x recipient) came from `sender`."""
        with self._lock:
            return self._counts[sender].total() if sender in self._counts else 0

    def recipients_from(self, sender: str) -> Counter[str]:
        """How many messages each address received from `sender`."""
        with self._lock:
            return Counter(self._counts.get(sender, Counter()))

    def from_sender(self, sender: str) -> list[ReceivedMail]:
        """What arrived from `sender`, in the order it arrived."""
        with self._lock:
            return [mail for mail in self._received if mail.mail_from == sender]

    def to(self, address: str, *, sender: str | None = None) -> list[ReceivedMail]:
        with self._lock:
            return [
                mail
                for mail in self._received
                if address in mail.rcpt_tos and (sender is None or mail.mail_from == sender)
            ]


@contextmanager
def running_sink(port: int, sink: Sink | None = None) -> Iterator[Sink]:
    """An aiosmtpd server on loopback, in a thread of this process, recording into a Sink (a new one unless given)."""
    sink = sink if sink is not None else Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
