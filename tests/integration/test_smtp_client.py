"""tripmail.delivery.smtp against real SMTP peers on loopback: what counts as sent, refused, retryable or unknown."""

import asyncio
import ssl
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support.ports import free_port
from tripmail.delivery.smtp import (
    Envelope,
    Outcome,
    Relay,
    Relays,
    SendingLoop,
    SendResult,
    SmtpTarget,
    Stage,
    parse_smtp_url,
)

MESSAGE = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: s\r\n\r\nbody\r\n"


def envelopes(*recipients: str) -> list[Envelope]:
    return [Envelope(index, "a@example.com", recipient, (MESSAGE,)) for index, recipient in enumerate(recipients)]


def target(port: int) -> SmtpTarget:
    return SmtpTarget("127.0.0.1", port, use_tls=False, start_tls=False, username=None, password=None)


async def send_all(
    target: SmtpTarget, envelopes: list[Envelope], *, connections: int, timeout: float, deadline: float
) -> list[SendResult]:
    """One send over a pool of its own, closed after it."""
    relays = Relays([Relay(target)], size=connections, timeout=timeout)
    try:
        return await relays.send_all(envelopes, deadline=deadline)
    finally:
        await relays.close()


class Handler:
    async def handle_MAIL(
        self, server: object, session: object, envelope: object, address: str, options: list[str]
    ) -> str:
        if address.startswith("refused"):
            return "550 5.7.1 sender rejected"
        envelope.mail_from = address  # type: ignore[attr-defined]
        envelope.mail_options.extend(options)  # type: ignore[attr-defined]
        return "250 OK"

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
        if any(r.startswith("toobig") for r in envelope.rcpt_tos):  # type: ignore[attr-defined]
            return "552 message size exceeds the limit"
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


def test_a_refusal_names_the_command_it_answered(relay: int) -> None:
    refused = [
        Envelope(0, "refused@example.com", "b@example.com", (MESSAGE,)),
        Envelope(1, "a@example.com", "gone@example.com", (MESSAGE,)),
        Envelope(2, "a@example.com", "toobig@example.com", (MESSAGE,)),
    ]
    results = asyncio.run(send_all(target(relay), refused, connections=1, timeout=5, deadline=30))
    assert sorted((result.key, result.stage, result.reply) for result in results) == [
        (0, Stage.MAIL, "550 5.7.1 sender rejected"),
        (1, Stage.RCPT, "550 5.1.1 no such user"),
        (2, Stage.DATA, "552 message size exceeds the limit"),
    ]


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


class CountingHandler(Handler):
    """Remembers the client end of every connection a message came over."""

    def __init__(self) -> None:
        self.peers: list[object] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        self.peers.append(session.peer)  # type: ignore[attr-defined]
        return await super().handle_DATA(server, session, envelope)


def test_a_sending_loop_reuses_its_connections_from_one_send_to_the_next() -> None:
    handler = CountingHandler()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    sending = SendingLoop([Relay(target(controller.port))], size=2, timeout=5)
    try:
        outcomes = [
            result.outcome
            for recipient in ("a@example.com", "b@example.com", "c@example.com")
            for result in sending.run(sending.relays.send_all(envelopes(recipient), deadline=30))
        ]
    finally:
        sending.run(sending.relays.close())
        controller.stop()
    assert outcomes == [Outcome.SENT] * 3
    assert len(handler.peers) == 3
    assert len(set(handler.peers)) == 1


def test_a_pooled_connection_the_relay_dropped_is_replaced_not_failed() -> None:
    handler = CountingHandler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    sending = SendingLoop([Relay(target(port))], size=1, timeout=5)
    try:
        first = sending.run(sending.relays.send_all(envelopes("a@example.com"), deadline=30))
        # A relay restart closes every connection the pool keeps.
        controller.stop()
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        second = sending.run(sending.relays.send_all(envelopes("b@example.com"), deadline=30))
    finally:
        sending.run(sending.relays.close())
        controller.stop()
    assert [result.outcome for result in first + second] == [Outcome.SENT, Outcome.SENT]
    assert len(set(handler.peers)) == 2


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key), made with the openssl command."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    subprocess.run(
        ["openssl", *request, "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


def accept_only(login: bytes, password: bytes) -> Callable[..., AuthResult]:
    def authenticate(server: object, session: object, envelope: object, mechanism: str, data: object) -> AuthResult:
        assert isinstance(data, LoginPassword)
        return AuthResult(success=(data.login, data.password) == (login, password))

    return authenticate


# aiosmtpd warns about auth_require_tls=False, which the implicit-TLS case needs (see below).
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("implicit_tls", [False, True], ids=["starttls", "smtps"])
def test_tls_and_login_from_the_smtp_url(certificate: tuple[Path, Path], implicit_tls: bool) -> None:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    port = free_port()
    handler = Handler()
    # aiosmtpd does not count a connection that was TLS from the start as TLS when it offers AUTH.
    tls = (
        {"ssl_context": context, "auth_require_tls": False}
        if implicit_tls
        else {"tls_context": context, "require_starttls": True}
    )
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=accept_only(b"mailer", b"s3cret/pass"),
        auth_required=True,
        **tls,  # type: ignore[arg-type]
    )
    controller.start()
    scheme, starttls = ("smtps", "") if implicit_tls else ("smtp", "starttls=1&")
    good = parse_smtp_url(f"{scheme}://mailer:s3cret%2Fpass@127.0.0.1:{port}?{starttls}cafile={cert}")
    bad = parse_smtp_url(f"{scheme}://mailer:wrong@127.0.0.1:{port}?{starttls}cafile={cert}")
    untrusted = parse_smtp_url(f"{scheme}://mailer:s3cret%2Fpass@127.0.0.1:{port}?{starttls.rstrip('&')}")
    try:
        sent = asyncio.run(send_all(good, envelopes("b@example.com"), connections=1, timeout=10, deadline=30))
        refused = asyncio.run(send_all(bad, envelopes("b@example.com"), connections=1, timeout=3, deadline=30))
        unverified = asyncio.run(
            send_all(untrusted, envelopes("b@example.com"), connections=1, timeout=10, deadline=30)
        )
    finally:
        controller.stop()

    assert [(result.outcome, result.code) for result in sent] == [(Outcome.SENT, 250)]
    # A rejected login or an unknown certificate is the relay's set-up, not the message's: retried, never a bounce.
    assert [result.outcome for result in refused] == [Outcome.TRANSIENT]
    assert refused[0].reply.startswith(f"connecting to 127.0.0.1:{port}: ")
    assert [result.outcome for result in unverified] == [Outcome.TRANSIENT]
    assert "CERTIFICATE_VERIFY_FAILED" in unverified[0].reply
