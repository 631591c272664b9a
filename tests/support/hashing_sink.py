"""An SMTP server that keeps no message: it counts each one and hashes its first attachment as it streams past.

aiosmtpd reads DATA a line at a time and keeps the whole message: for gigabytes of attachments that is minutes of
CPU and gigabytes of the test process's memory. This one reads DATA in the chunks the socket gives, keeps the
first bytes of each message (its headers) and a SHA-256 of its first attachment's body as sent (base64 in CRLF
lines), and answers 250 to everything.
"""

import asyncio
import hashlib
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import uvloop

# Kept of each message, and looked through for the attachment's headers: a message's headers and text parts.
HEAD_BYTES = 64 * 1024
_ATTACHMENT = b"\r\nContent-Disposition: attachment"
_END_OF_DATA = b"\r\n.\r\n"
# A MIME delimiter line, which base64 (no '-') cannot contain: where the attachment's body ends.
_DELIMITER = b"\r\n--"


@dataclass(frozen=True)
class Arrival:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    size: int
    head: bytes
    # Of the first attachment's body as it went over the wire (up to the CRLF of the delimiter after it); None
    # when the message had no attachment.
    attachment_sha256: str | None


class HashingSink:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrivals: list[Arrival] = []
        self._counts: Counter[str] = Counter()

    def add(self, arrival: Arrival) -> None:
        with self._lock:
            self._arrivals.append(arrival)
            self._counts[arrival.mail_from] += 1

    def count_from(self, sender: str) -> int:
        with self._lock:
            return self._counts[sender]

    def from_sender(self, sender: str) -> list[Arrival]:
        with self._lock:
            return [arrival for arrival in self._arrivals if arrival.mail_from == sender]


class _Message:
    """One message's DATA, fed in pieces: its size, its head, and its attachment's hash."""

    def __init__(self) -> None:
        self.size = 0
        self.head = bytearray()
        self.hash: hashlib._Hash | None = None
        self._in_body = False
        self._carry = b""

    def feed(self, piece: bytes) -> None:
        self.size += len(piece)
        if self._in_body:
            self._body(piece)
            return
        if self.hash is not None or len(self.head) >= HEAD_BYTES:
            return
        self.head += piece
        found = self.head.find(_ATTACHMENT)
        start = self.head.find(b"\r\n\r\n", found) if found >= 0 else -1
        if start >= 0:
            rest = bytes(self.head[start + 4 :])
            del self.head[start + 4 :]
            self.hash = hashlib.sha256()
            self._in_body = True
            self._body(rest)
        del self.head[HEAD_BYTES:]

    def _body(self, piece: bytes) -> None:
        assert self.hash is not None
        joined = self._carry + piece
        end = _find(joined, _DELIMITER)
        if end >= 0:
            self.hash.update(memoryview(joined)[:end])
            self._in_body = False
            return
        keep = len(_DELIMITER) - 1
        self.hash.update(memoryview(joined)[: len(joined) - keep])
        self._carry = joined[len(joined) - keep :]


class _Session(asyncio.Protocol):
    def __init__(self, sink: HashingSink) -> None:
        self._sink = sink
        self._transport: asyncio.Transport | None = None
        self._line = bytearray()
        self._mail_from = ""
        self._rcpt_tos: list[str] = []
        self._message: _Message | None = None
        # The last bytes of the DATA so far: the end-of-data line may arrive split across reads.
        self._last = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, though they have its methods.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.write(b"220 hashing sink ready\r\n")

    def data_received(self, data: bytes) -> None:
        while data:
            data = self._data(data) if self._message is not None else self._command(data)

    def _command(self, data: bytes) -> bytes:
        """Reads up to one command line and answers it; the bytes after that line."""
        end = data.find(b"\n")
        if end < 0:
            self._line += data
            return b""
        self._line += data[: end + 1]
        line = bytes(self._line).rstrip(b"\r\n").decode("utf-8", "replace")
        self._line.clear()
        verb = line[:4].upper()
        assert self._transport is not None
        if verb in ("EHLO", "HELO"):
            self._transport.write(b"250 hashing sink\r\n")
        elif verb == "MAIL":
            self._mail_from, self._rcpt_tos = _address(line), []
            self._transport.write(b"250 OK\r\n")
        elif verb == "RCPT":
            self._rcpt_tos.append(_address(line))
            self._transport.write(b"250 OK\r\n")
        elif verb == "DATA":
            self._message, self._last = _Message(), b"\r\n"
            self._transport.write(b"354 end with <CRLF>.<CRLF>\r\n")
        elif verb == "QUIT":
            self._transport.write(b"221 bye\r\n")
            self._transport.close()
        elif verb in ("RSET", "NOOP"):
            self._transport.write(b"250 OK\r\n")
        else:
            self._transport.write(b"502 not implemented\r\n")
        return data[end + 1 :]

    def _data(self, data: bytes) -> bytes:
        """Feeds the DATA in `data` to the message; the bytes after its end, if it ended."""
        assert self._message is not None and self._transport is not None
        seam = (self._last + data[: len(_END_OF_DATA)]).find(_END_OF_DATA)
        end = seam - len(self._last) if seam >= 0 else _find(data, _END_OF_DATA)
        if end < 0 and seam < 0:
            self._message.feed(data)
            self._last = (self._last + data[-len(_END_OF_DATA) :])[-len(_END_OF_DATA) :]
            return b""
        # The message ends with the CRLF that starts the end-of-data marker; a negative cut takes back the few
        # bytes of the marker fed with the previous read.
        cut = end + 2
        if cut > 0:
            self._message.feed(data[:cut])
        else:
            self._message.size += cut
        message, self._message = self._message, None
        self._sink.add(
            Arrival(
                self._mail_from,
                tuple(self._rcpt_tos),
                message.size,
                bytes(message.head),
                message.hash.hexdigest() if message.hash is not None else None,
            )
        )
        self._transport.write(b"250 2.0.0 counted\r\n")
        return data[end + len(_END_OF_DATA) :]


def _find(data: bytes, needle: bytes) -> int:
    """data.find(needle) for a needle with a CRLF, then a byte base64 lacks: found by that byte (memchr), as
    bytes.find slows to a third on a needle that starts or ends with a CRLF, which base64 has every 78 bytes."""
    rare = needle[2]
    at = data.find(rare, 2)
    while at >= 0:
        if data.startswith(needle, at - 2):
            return at - 2
        at = data.find(rare, at + 1)
    return -1


def _address(line: str) -> str:
    return line.partition(":")[2].strip().split(" ")[0].strip("<>")


@contextmanager
def running_hashing_sink(port: int) -> Iterator[HashingSink]:
    """The sink on loopback, served from a thread of this process."""
    sink = HashingSink()
    loop = uvloop.new_event_loop()
    server = loop.run_until_complete(loop.create_server(lambda: _Session(sink), "127.0.0.1", port))
    thread = threading.Thread(target=loop.run_forever, name="hashing-sink", daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
