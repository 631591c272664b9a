"""An SMTP sink that injects faults and counts every message it accepts, by Message-ID and by recipient.

Run as `python -m bench.fault_sink --port N [--transient 0.10] [--refuse 0.02] [--seed S]`. It prints READY once it
accepts connections, then answers one line per command read from stdin:

    stats    ->  JSON: messages accepted, 421s and 550s answered, the monotonic time of the last acceptance
    tally    ->  JSON: {"recipients": {address: times accepted}, "message_ids": {Message-ID: times accepted}}
    down     ->  the server stops: connections open are cut, new ones refused (a relay that went down)
    up       ->  the server listens again on the same port
    quit     ->  stops

Faults: a recipient that `refused(address, rate)` picks (a hash of the address, so the bench knows the same set in
advance) gets 550 at RCPT, every time: a permanent failure that must be recorded failed and never delivered. Any
other message gets 421 at the end of DATA with probability `--transient`, at random per attempt: a transient
failure that must be retried and then delivered. A message answered 421 is not counted as accepted.
"""

import argparse
import hashlib
import json
import random
import re
import threading
import time
from collections import Counter
from typing import Any

from aiosmtpd.controller import Controller

from bench.sink import serve, smtp_controller

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(\S+)\s*$", re.MULTILINE | re.IGNORECASE)


def refused(address: str, rate: float) -> bool:
    """Whether the sink answers 550 to `address`: about `rate` of all addresses, the same ones in every process."""
    digest = hashlib.sha256(address.lower().encode()).digest()
    return int.from_bytes(digest[:4], "big") < rate * 2**32


class FaultyHandler:
    """aiosmtpd handler: 550 to the refused recipients, 421 to a random share of messages, 250 to the rest."""

    def __init__(self, *, transient: float, refuse: float, seed: int) -> None:
        self.transient = transient
        self.refuse = refuse
        self.random = random.Random(seed)  # noqa: S311 - fault injection, not security
        self.recipients: Counter[str] = Counter()
        self.message_ids: Counter[str] = Counter()
        self.accepted = 0
        self.answered_421 = 0
        self.answered_550 = 0
        self.last_at = 0.0
        # The handler runs on the server's thread, the commands on the main one.
        self.lock = threading.Lock()

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.refuse > 0 and refused(address, self.refuse):
            with self.lock:
                self.answered_550 += 1
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        if self.transient > 0 and self.random.random() < self.transient:
            with self.lock:
                self.answered_421 += 1
            return "421 4.3.2 try again later"
        found = _MESSAGE_ID.search(envelope.original_content or envelope.content or b"")
        with self.lock:
            self.message_ids[found[1].decode(errors="replace") if found else "(none)"] += 1
            self.recipients.update(address.lower() for address in envelope.rcpt_tos)
            self.accepted += 1
            self.last_at = time.monotonic()
        return "250 2.0.0 queued"


class Switchable:
    """The SMTP server, stopped and started again on the same port: a stopped Controller cannot start again (its
    event loop is closed), so each start makes a new one."""

    def __init__(self, handler: FaultyHandler, *, host: str, port: int) -> None:
        self._handler = handler
        self._host = host
        self._port = port
        self._running: Controller | None = None

    def start(self) -> None:
        if self._running is None:
            self._running = smtp_controller(self._handler, host=self._host, port=self._port)
            self._running.start()

    def stop(self) -> None:
        if self._running is not None:
            self._running.stop()
            self._running = None


def answer(handler: FaultyHandler, server: Switchable, command: str) -> str | None:
    verb = command.strip()
    if verb in ("down", "up"):
        # Outside the lock: stopping waits for the handler's tasks, which take it.
        (server.stop if verb == "down" else server.start)()
        return json.dumps({verb: True})
    with handler.lock:
        return _answer(handler, verb)


def _answer(handler: FaultyHandler, verb: str) -> str | None:
    if verb == "stats":
        return json.dumps(
            {
                "accepted": handler.accepted,
                "answered_421": handler.answered_421,
                "answered_550": handler.answered_550,
                "last_at": handler.last_at,
            }
        )
    if verb == "tally":
        return json.dumps({"recipients": dict(handler.recipients), "message_ids": dict(handler.message_ids)})
    if verb == "quit":
        return None
    return json.dumps({"error": f"unknown command {verb!r}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transient", type=float, default=0.0, help="share of messages answered 421 at DATA")
    parser.add_argument("--refuse", type=float, default=0.0, help="share of recipients answered 550 at RCPT")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    handler = FaultyHandler(transient=args.transient, refuse=args.refuse, seed=args.seed)
    server = Switchable(handler, host=args.host, port=args.port)
    serve(server, lambda line: answer(handler, server, line))


if __name__ == "__main__":
    main()
