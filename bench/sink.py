"""A counting SMTP sink in its own process: answers 250 to everything and keeps nothing but counts and times.

Run as `python -m bench.sink --port N`. It prints READY once it accepts connections, then answers one line per
command read from stdin, so the bench can poll it without touching the SMTP path:

    count DOMAIN    ->  "<messages> <distinct recipients> <monotonic time of the last message>" for that domain
    stamps DOMAIN   ->  JSON {recipient: monotonic time its message was accepted} (first arrival) for that domain
    quit            ->  stops

Times are `time.monotonic()` (CLOCK_MONOTONIC on Linux, one clock for every process of the machine), taken when
the DATA phase ends, just before the 250 goes out: "SMTP-accepted". Counting by recipient domain lets each part of
the bench use a domain of its own, so a late or duplicate message of one part cannot be counted in another.
"""

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import uvloop
from aiosmtpd.controller import Controller


@dataclass
class DomainTally:
    messages: int = 0
    last_at: float = 0.0
    accepted_at: dict[str, float] = field(default_factory=dict)


class CountingHandler:
    """aiosmtpd handler: every RCPT and DATA is accepted; DATA is counted per recipient domain."""

    def __init__(self) -> None:
        self.domains: defaultdict[str, DomainTally] = defaultdict(DomainTally)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        now = time.monotonic()
        for address in envelope.rcpt_tos:
            tally = self.domains[address.rpartition("@")[2].lower()]
            tally.messages += 1
            tally.last_at = now
            tally.accepted_at.setdefault(address.lower(), now)
        return "250 2.0.0 OK"


def answer(handler: CountingHandler, command: str) -> str | None:
    verb, _, argument = command.strip().partition(" ")
    tally = handler.domains.get(argument.strip().lower(), DomainTally())
    if verb == "count":
        return f"{tally.messages} {len(tally.accepted_at)} {tally.last_at!r}"
    if verb == "stamps":
        return json.dumps(dict(tally.accepted_at))
    if verb == "quit":
        return None
    return f"error: unknown command {verb!r}"


def smtp_controller(handler: Any, *, host: str, port: int) -> Controller:
    # uvloop keeps the sink's own cost per message low, so it is less often the wall the senders hit.
    return Controller(handler, hostname=host, port=port, loop=uvloop.new_event_loop())


class Server(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


def serve(controller: Server, answer_line: Callable[[str], str | None]) -> None:
    """Serve SMTP; print READY, then answer each line of stdin until `answer_line` gives None."""
    controller.start()
    try:
        print("READY", flush=True)
        for line in sys.stdin:
            reply = answer_line(line)
            if reply is None:
                break
            print(reply, flush=True)
    finally:
        controller.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    handler = CountingHandler()
    serve(smtp_controller(handler, host=args.host, port=args.port), lambda line: answer(handler, line))


if __name__ == "__main__":
    main()
