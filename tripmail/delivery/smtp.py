"""Sending over SMTP with aiosmtplib, several connections at once, each reused for many messages."""

import asyncio
import logging
import random
import re
import threading
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

import aiosmtplib
import uvloop

from tripmail.config import Settings
from tripmail.delivery.rates import SendRates, parse_domain_rates, parse_rate
from tripmail.metrics import delivery_metrics

log = logging.getLogger(__name__)

_TRUE = {"1", "true", "yes", "on"}

T = TypeVar("T")


@dataclass(frozen=True)
class SmtpTarget:
    hostname: str
    port: int
    use_tls: bool
    start_tls: bool | None
    username: str | None
    password: str | None
    # A CA bundle to verify the relay's certificate with, for a relay whose CA the system does not know.
    cafile: str | None = None


def parse_smtp_url(url: str) -> SmtpTarget:
    """smtp://[user:pass@]host[:port][?starttls=1][&cafile=/path/ca.pem] or smtps:// for TLS from the first byte."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError(f"SMTP URL must look like smtp://user:pass@host:587?starttls=1, got scheme {parts.scheme!r}")
    query = parse_qs(parts.query)
    use_tls = parts.scheme == "smtps"
    starttls_flag = query.get("starttls", [None])[0]
    return SmtpTarget(
        hostname=parts.hostname,
        port=parts.port or (465 if use_tls else 25),
        use_tls=use_tls,
        # None lets aiosmtplib upgrade when the server offers STARTTLS; an explicit flag forces it either way.
        start_tls=None if starttls_flag is None else starttls_flag.lower() in _TRUE,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        cafile=query.get("cafile", [None])[0],
    )


@dataclass(frozen=True)
class Relay:
    """One relay of TRIPMAIL_SMTP_URL: where it is, its share of the mail, and its send rate."""

    target: SmtpTarget
    # Its share of the mail among the relays with a weight; 0: it takes mail only when the ones before it fail.
    weight: int = 1
    # The most it may be sent (`100/second`, limits' notation), counted across every worker; None: no limit.
    rate: str | None = None

    @property
    def name(self) -> str:
        """How messages and logs name it: host and port, never its credentials."""
        return f"{self.target.hostname}:{self.target.port}"


def parse_relays(text: str) -> list[Relay]:
    """One or more SMTP URLs, separated by spaces or commas, in failover order; each may add `weight=N` and
    `rate=100/second` to its query (a comma inside a password is written %2C)."""
    relays = []
    for url in text.replace(",", " ").split():
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        weight_text = query.pop("weight", ["1"])[0]
        rate = query.pop("rate", [None])[0]
        if not weight_text.isdigit():
            raise ValueError(f"relay {parts.hostname}: weight must be a whole number of 0 or more, got {weight_text!r}")
        if rate is not None:
            parse_rate(rate)
        rest = urlencode([(key, value) for key, values in query.items() for value in values])
        relays.append(Relay(parse_smtp_url(urlunsplit(parts._replace(query=rest))), int(weight_text), rate))
    if not relays:
        raise ValueError("TRIPMAIL_SMTP_URL names no relay: give at least one smtp:// or smtps:// URL")
    return relays


class Outcome(StrEnum):
    SENT = "sent"
    PERMANENT = "permanent"
    TRANSIENT = "transient"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Envelope:
    key: int
    sender: str
    recipient: str
    # The message as DATA sends it, in pieces written one after the other: CRLF line ends and no line that starts
    # with "." (see wire_form). A piece may be shared by many envelopes: an attachment's body, encoded once per batch.
    content: tuple[bytes, ...]


_LINE_ENDS = re.compile(rb"\r\n|\r|\n")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def wire_form(piece: bytes) -> bytes:
    """`piece` as DATA sends it (RFC 5321 4.5.2): every line end a CRLF and a "." that starts a line doubled, as
    aiosmtplib's data() does to a whole message. `piece` starts at a line's start or at a CRLF."""
    return _LEADING_DOT.sub(b"..", _LINE_ENDS.sub(b"\r\n", piece))


class Stage(StrEnum):
    """The command of a message's SMTP transaction that a reply answered."""

    MAIL = "MAIL FROM"
    RCPT = "RCPT TO"
    DATA = "DATA"


@dataclass(frozen=True)
class SendResult:
    key: int
    outcome: Outcome
    code: int | None
    reply: str
    # The command the server refused the message at; None when no reply in the transaction refused it.
    stage: Stage | None = None
    # The relay that gave the result (Relay.name); None when none was reached.
    relay: str | None = None

    @property
    def refuses_recipient(self) -> bool:
        """Whether the server refused the recipient's address itself, for good: the refusal that suppresses it."""
        if self.stage is None or self.code is None:
            return False
        return refuses_recipient(self.stage, self.code, self.reply.removeprefix(f"{self.code} "))


class JournalUnavailable(Exception):
    """The journal could not write a hand-over down; the message must not be sent."""


class Journal(Protocol):
    """Where the sender writes down each message's progress as it happens."""

    async def handing_over(self, key: int) -> None:
        """Returns once it is written down that the message is about to be handed to the server (before DATA).

        Raises JournalUnavailable when that could not be written.
        """

    def record(self, result: SendResult) -> None:
        """Takes a message's result; it may be written down later, in order with what came before."""


class _Unrecorded:
    async def handing_over(self, key: int) -> None:
        return None

    def record(self, result: SendResult) -> None:
        return None


class SmtpPool:
    """SMTP sessions kept open between sends on one event loop, up to `size` at once.

    Connecting costs more than sending a message (TCP, greeting, EHLO, maybe TLS and AUTH, then QUIT), so a
    worker keeps its connections for the next task instead. One idle past `check_after_s` is probed with NOOP
    first: the relay may have dropped it without our noticing.
    """

    def __init__(self, target: SmtpTarget, *, size: int, timeout: float, check_after_s: float = 10.0) -> None:
        self.target = target
        self.size = size
        self.timeout = timeout
        self._check_after_s = check_after_s
        self._idle: list[tuple[float, aiosmtplib.SMTP]] = []

    async def acquire(self) -> aiosmtplib.SMTP:
        """An open session: an idle one that still answers, else a new one (which may raise connecting)."""
        while self._idle:
            idle_since, client = self._idle.pop()
            if not client.is_connected:
                continue
            if time.monotonic() - idle_since < self._check_after_s:
                return client
            try:
                await client.noop()
                return client
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()
        return await _connect(self.target, self.timeout)

    def release(self, client: aiosmtplib.SMTP) -> None:
        """Keep a session that ended its last transaction cleanly; close it when the pool holds enough."""
        if not client.is_connected:
            return
        if len(self._idle) >= self.size:
            client.close()
            return
        self._idle.append((time.monotonic(), client))

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, client in idle:
            await _quit(client)


# How long a relay that could not be reached is offered mail only after the others.
RELAY_REST_S = 10.0


class Relays:
    """The relays, each with its pool of sessions. A message goes to one chosen by weight, and on to the others in
    their order while one cannot be reached or defers it (a 4xx) before its DATA: never once DATA went to one,
    which may then have it."""

    def __init__(self, relays: Sequence[Relay], *, size: int, timeout: float, rates: SendRates | None = None) -> None:
        self.relays = list(relays)
        self.pools = [SmtpPool(relay.target, size=size, timeout=timeout) for relay in self.relays]
        self.size = size
        self.rates = rates
        self._weighted = [index for index, relay in enumerate(self.relays) if relay.weight > 0]
        # When each relay that could not be reached may be offered mail first again (time.monotonic()).
        self._resting_until = [0.0] * len(self.relays)

    def order(self) -> list[int]:
        """The relays to offer one message to, by index: one picked by weight, then the rest in their order; a
        relay that could not be reached lately comes last, so a relay whose host does not answer costs one
        connection timeout every RELAY_REST_S rather than one per message."""
        if len(self.relays) == 1:
            return [0]
        now = time.monotonic()
        awake = [index for index in self._weighted if self._resting_until[index] <= now]
        order = list(range(len(self.relays)))
        if awake:
            weights = [self.relays[index].weight for index in awake]
            first = random.choices(awake, weights=weights)[0]  # noqa: S311 - spreading load, not security
            order = [first, *(index for index in order if index != first)]
        return sorted(order, key=lambda index: self._resting_until[index] > now)

    def unreachable(self, index: int) -> None:
        self._resting_until[index] = time.monotonic() + RELAY_REST_S

    async def close(self) -> None:
        for pool in self.pools:
            await pool.close()

    async def send_all(
        self, envelopes: Sequence[Envelope], *, deadline: float, journal: Journal | None = None
    ) -> list[SendResult]:
        """Send every envelope over up to `size` parallel sessions; never raises for one message.

        After `deadline` seconds the sending stops: an envelope without a result then has no known fate (it
        may have been mid-send), so the caller must not treat it as failed and send it again blindly; the
        journal tells which of them were handed over.
        """
        queue: asyncio.Queue[Envelope] = asyncio.Queue()
        for envelope in envelopes:
            queue.put_nowait(envelope)
        results: list[SendResult] = []
        sending = _Sending(self, journal or _Unrecorded(), results)
        workers = [asyncio.create_task(sending.drain(queue)) for _ in range(min(self.size, len(envelopes)))]
        try:
            async with asyncio.timeout(deadline):
                await asyncio.gather(*workers)
        except TimeoutError:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        return results


class SendingLoop:
    """An event loop in a thread of its own, with the relays' pools on it, for the life of a worker process.

    A task runs its sending here (`run`) rather than in a loop of its own, so the pools' connections and the
    loop's threads outlive the task.
    """

    def __init__(self, relays: Sequence[Relay], *, size: int, timeout: float, rates: SendRates | None = None) -> None:
        self.relays = Relays(relays, size=size, timeout=timeout, rates=rates)
        # uvloop: its transports and thread hand-offs cost less CPU per message than asyncio's
        # (bench/results.md, What the code's shape rests on).
        self._loop = uvloop.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="smtp-sending", daemon=True).start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run on the loop and wait for the result; call from any thread but the loop's own."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()


class _Sending:
    def __init__(self, relays: Relays, journal: Journal, results: list[SendResult]) -> None:
        self.relays = relays
        self.journal = journal
        self.results = results

    def _report(self, result: SendResult) -> None:
        self.results.append(result)
        self.journal.record(result)

    async def drain(self, queue: "asyncio.Queue[Envelope]") -> None:
        """A session per relay it needs, each reused for envelope after envelope until the queue is empty."""
        clients: dict[int, aiosmtplib.SMTP] = {}
        finished = False
        try:
            while not queue.empty():
                self._report(await self._deliver(queue.get_nowait(), clients))
            finished = True
        finally:
            for index, client in clients.items():
                if finished:
                    self.relays.pools[index].release(client)
                else:
                    # Stopped by the deadline mid-command: the session's state is unknown, so no one reuses it.
                    client.close()

    async def _deliver(self, envelope: Envelope, clients: dict[int, aiosmtplib.SMTP]) -> SendResult:
        """The envelope through its relays in turn, until one gives an answer that is not a deferral before DATA."""
        if self.relays.rates is not None:
            await self.relays.rates.domain_turn(envelope.recipient)
        result: SendResult | None = None
        for index in self.relays.order():
            if result is not None:
                log.warning(
                    "message %d: relay %s: %s; offering it to the next relay", envelope.key, result.relay, result.reply
                )
                delivery_metrics().failovers.labels(result.relay).inc()
            result, before_data = await self._through(index, envelope, clients)
            if not (before_data and result.outcome is Outcome.TRANSIENT):
                break
        assert result is not None  # there is always a relay: parse_relays refuses none
        return result

    async def _through(
        self, index: int, envelope: Envelope, clients: dict[int, aiosmtplib.SMTP]
    ) -> tuple[SendResult, bool]:
        """The envelope's result at one relay, and whether it came before its DATA went out."""
        relay = self.relays.relays[index].name
        if self.relays.rates is not None:
            await self.relays.rates.relay_turn(relay)
        client = clients.get(index)
        if client is None or not client.is_connected:
            try:
                client = clients[index] = await self.relays.pools[index].acquire()
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                # Greeting, TLS and login failures are about the relay or Tripmail's settings, not this message:
                # even a 5xx here (535 bad password) is worth retrying once the relay is fixed.
                clients.pop(index, None)
                self.relays.unreachable(index)
                return SendResult(
                    envelope.key, Outcome.TRANSIENT, None, f"connecting to {relay}: {exc}", None, relay
                ), True
        try:
            result = await self._send_one(client, envelope)
        except aiosmtplib.SMTPHeloError as exc:
            client.close()
            reply = f"greeting: {exc.code} {exc.message}"
            return SendResult(envelope.key, Outcome.TRANSIENT, exc.code, reply, None, relay), True
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # Anything _send_one lets out happened before DATA: it records a break during DATA itself.
            client.close()
            return SendResult(envelope.key, Outcome.TRANSIENT, None, f"{type(exc).__name__}: {exc}", None, relay), True
        return replace(result, relay=relay), result.stage in (Stage.MAIL, Stage.RCPT)

    async def _send_one(self, client: aiosmtplib.SMTP, envelope: Envelope) -> SendResult:
        """MAIL, RCPT, DATA one by one, so a break after the message was handed over can be told apart."""
        if client.is_ehlo_or_helo_needed:
            await client.ehlo()
        started = time.monotonic()
        stage = Stage.MAIL
        try:
            await client.mail(envelope.sender)
            stage = Stage.RCPT
            await client.rcpt(envelope.recipient)
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(client)
            return _failure(envelope.key, stage, exc)
        try:
            await self.journal.handing_over(envelope.key)
        except JournalUnavailable as exc:
            # Not written down, so not handed over: the message stays resendable, never sent unrecorded.
            await _reset(client)
            return SendResult(envelope.key, Outcome.TRANSIENT, None, f"recording the hand-over failed: {exc}")
        try:
            reply = await _data(client, envelope.content)
        except aiosmtplib.SMTPResponseException as exc:
            await _reset(client)
            return _failure(envelope.key, Stage.DATA, exc)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            # RFC 1047: the server may have taken the message before the connection broke. Resending could
            # deliver it twice, so its fate is recorded as unknown instead.
            return SendResult(envelope.key, Outcome.UNKNOWN, None, f"connection lost during DATA: {exc}")
        delivery_metrics().smtp_seconds.observe(time.monotonic() - started)
        return SendResult(envelope.key, Outcome.SENT, reply.code, f"{reply.code} {reply.message}")


async def _connect(target: SmtpTarget, timeout: float) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(
        hostname=target.hostname,
        port=target.port,
        use_tls=target.use_tls,
        start_tls=target.start_tls,
        username=target.username,
        password=target.password,
        timeout=timeout,
        cert_bundle=target.cafile,
    )
    await client.connect()
    return client


async def _data(client: aiosmtplib.SMTP, content: Sequence[bytes]) -> aiosmtplib.SMTPResponse:
    """DATA, with the message's pieces written as they are.

    aiosmtplib's data() takes the message in one bytes and copies it twice to put it in wire form, which costs
    CPU and memory per message in flight in proportion to its attachments (bench/results.md, What the code's shape
    rests on), where the pieces are in wire form already and share their attachment's bytes.
    """
    start = await client.execute_command(b"DATA")
    if start.code != aiosmtplib.SMTPStatus.start_input:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = client.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    try:
        for piece in content:
            protocol.write(piece)
        protocol.write(b".\r\n" if content and content[-1].endswith(b"\r\n") else b"\r\n.\r\n")
        reply = await protocol.read_response(timeout=client.timeout)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        # As data() does: the session's state is unknown, so no one reuses it.
        client.close()
        raise
    if reply.code != aiosmtplib.SMTPStatus.completed:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    return reply


async def _quit(client: aiosmtplib.SMTP) -> None:
    if not client.is_connected:
        return
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        client.close()


async def _reset(client: aiosmtplib.SMTP) -> None:
    """Clear the refused envelope so the connection can carry the next message."""
    try:
        await client.rset()
    except (aiosmtplib.SMTPException, OSError):
        client.close()


def _failure(key: int, stage: Stage, refusal: aiosmtplib.SMTPResponseException) -> SendResult:
    # RFC 5321 4.2.1: 4yz replies are transient, 5yz permanent.
    outcome = Outcome.PERMANENT if 500 <= refusal.code < 600 else Outcome.TRANSIENT
    return SendResult(key, outcome, refusal.code, f"{refusal.code} {refusal.message}", stage)


# An RFC 3463 enhanced status code of a permanent failure (5.subject.detail), which RFC 2034 puts at the start of
# the reply's text.
_ENHANCED_PERMANENT = re.compile(r"5\.(\d{1,3})\.(\d{1,3})\b")
# 5.1.7 and 5.1.8: the sender's mailbox or address is bad, not the recipient's.
_SENDER_ADDRESS_DETAILS = {"7", "8"}
# Without an enhanced code, the RCPT replies RFC 5321 gives for a mailbox that is not there or not allowed:
# 550 unavailable, 551 not local, 553 name not allowed. (554 is the transaction as a whole, often a policy.)
_RECIPIENT_REFUSALS = {550, 551, 553}


def refuses_recipient(stage: Stage, code: int, text: str) -> bool:
    """Whether a reply refuses the recipient's address itself, for good, rather than the sender, the message or
    the relay's policy: only then is the address worth never mailing again.

    `text` is the reply after its code, where an enhanced status code comes first.
    """
    if not 500 <= code < 600 or stage is Stage.MAIL:
        # MAIL FROM names the sender only: whatever it refuses (a 5.1.x too) is about the sender.
        return False
    enhanced = _ENHANCED_PERMANENT.match(text.lstrip())
    if enhanced is not None:
        subject, detail = enhanced.groups()
        # Only 5.1.x is about the destination address. 5.2.x (mailbox full, disabled, over its size limit) is the
        # mailbox's state, which can change; 5.7.x is a policy (spam, relay, auth); the rest are the system, the
        # network, the protocol or the content.
        return subject == "1" and detail not in _SENDER_ADDRESS_DETAILS
    return stage is Stage.RCPT and code in _RECIPIENT_REFUSALS


def make_sending_loop(settings: Settings) -> SendingLoop:
    """The relays of TRIPMAIL_SMTP_URL, with the send rates of those and of TRIPMAIL_SEND_DOMAIN_RATES, if any."""
    relays = parse_relays(settings.smtp_url.get_secret_value())
    relay_rates = {relay.name: parse_rate(relay.rate) for relay in relays if relay.rate is not None}
    domain_rates = parse_domain_rates(settings.send_domain_rates)
    rates = (
        SendRates(settings.redis_url, relays=relay_rates, domains=domain_rates) if relay_rates or domain_rates else None
    )
    return SendingLoop(relays, size=settings.smtp_connections, timeout=settings.smtp_timeout_s, rates=rates)
