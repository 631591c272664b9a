"""tripmail.smtp against real SMTP peers on loopback: what counts as sent, refused, retryable or unknown."""

import asyncio
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller

from tests.integration.conftest import free_port
from tripmail.smtp import Envelope, Outcome, SmtpTarget, send_all

MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: s\r\n\r\nbody\r\n"


def envelopes(*recipients: str) -> list[Envelope]:
    return [Envelope(index, "a@example.com", recipient, MESSAGE) for index, recipient in enumerate(recipients)]


def target(port: int) -> SmtpTarget:
    return SmtpTarget("127.0.0.1", port, use_tls=False, start_tls=False, username=None, password=None)


class Handler:
    async def handle_RCPT(
        self, server: object, session: object, envelope: object, address: str, options: object
    ) -> str:
        if address.startswith("gone"):
            return "550 5.1.1 no such user"
        if address.startswith("busy"):
            return "451 4.3.0 try later"
        envelope.rcpt_tos.append(address)  # type: ignore[attr-defined]
        return "250 OK"

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        if any(r.startswith("slow") for r in envelope.rcpt_tos):  # type: ignore[attr-defined]
            await asyncio.sleep(5)
        return "250 2.0.0 queued"


@pytest.fixture
def relay() -> Iterator[int]:
    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    yield port
    controller.stop()


def test_outcomes_by_reply(relay: int) -> None:
    results = asyncio.run(
        send_all(
            target(relay),
            envelopes("ok@example.com", "gone@example.com", "busy@example.com"),
            connections=2,
            timeout=5,
            deadline=30,
        )
    )
    by_key = {result.key: result for result in results}
    assert (by_key[0].outcome, by_key[0].code) == (Outcome.SENT, 250)
    assert (by_key[1].outcome, by_key[1].code) == (Outcome.PERMANENT, 550)
    assert (by_key[2].outcome, by_key[2].code) == (Outcome.TRANSIENT, 451)


def test_a_relay_that_refuses_the_session_is_retryable_not_a_bounce() -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"554 5.3.2 not accepting mail\r\n")
        await writer.drain()
        writer.close()

    async def scenario() -> list[Outcome]:
        server = await asyncio.start_server(refuse, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            results = await send_all(target(port), envelopes("ok@example.com"), connections=1, timeout=5, deadline=30)
        return [result.outcome for result in results]

    assert asyncio.run(scenario()) == [Outcome.TRANSIENT]


def test_nothing_is_reported_for_a_message_caught_by_the_deadline(relay: int) -> None:
    results = asyncio.run(
        send_all(target(relay), envelopes("slow@example.com", "ok@example.com"), connections=2, timeout=30, deadline=1)
    )
    assert [(result.key, result.outcome) for result in results] == [(1, Outcome.SENT)]


def test_a_connection_lost_after_the_message_was_handed_over_is_unknown() -> None:
    async def takes_the_message_then_hangs_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink\r\n")
        while line := await reader.readline():
            if line.upper().startswith(b"EHLO"):
                writer.write(b"250 sink\r\n")
            elif line.upper().startswith(b"DATA"):
                writer.write(b"354 go on\r\n")
                await writer.drain()
                await reader.readuntil(b"\r\n.\r\n")
                writer.close()  # the message is in; the 250 never comes
                return
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()

    async def scenario() -> list[tuple[Outcome, int | None]]:
        server = await asyncio.start_server(takes_the_message_then_hangs_up, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            results = await send_all(target(port), envelopes("b@example.com"), connections=1, timeout=5, deadline=30)
        return [(result.outcome, result.code) for result in results]

    assert asyncio.run(scenario()) == [(Outcome.UNKNOWN, None)]
