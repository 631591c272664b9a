"""The transactions of recording bounces and complaints where they come in: a Maildir, an IMAP or POP3 mailbox,
or an SMTP server of its own.

Each source is a thin adapter over `record_mail`: one report, one transaction, and only after its commit is the
report marked done at its source (moved to cur/, flagged seen or deleted, answered 250). A report whose
recording failed (the database away) stays where it was and is read again next time; recording is idempotent.
"""

import asyncio
import imaplib
import logging
import mailbox
import poplib
import ssl
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session as DatabaseSession
from sqlalchemy.orm import sessionmaker

from tripmail.bounces.reports import Recorded, ReportOutcome, read_report, record_report
from tripmail.errors import InvalidRequest

log = logging.getLogger(__name__)


def record_mail(
    sessions: sessionmaker[DatabaseSession],
    raw: bytes,
    *,
    envelope_recipients: Sequence[str] = (),
    clock: Callable[[], datetime],
) -> Recorded:
    """Read one bounce or complaint and record it, in a transaction of its own."""
    report = read_report(raw, envelope_recipients)
    with sessions.begin() as session:
        return record_report(session, report, now=clock())


@dataclass
class Tally:
    """What an intake did, by outcome; `echo` shows a line per report as it is recorded."""

    echo: Callable[[str], None]
    counts: Counter[ReportOutcome] = field(default_factory=Counter)

    def add(self, source: str, recorded: Recorded) -> None:
        self.counts[recorded.outcome] += 1
        self.echo(f"{source}: {recorded.outcome}: {recorded.detail}")

    def take_in(self, reports: Iterable[tuple[str, Recorded]]) -> None:
        for source, recorded in reports:
            self.add(source, recorded)

    def summary(self) -> str:
        outcomes = ", ".join(f"{self.counts[outcome]} {outcome}" for outcome in ReportOutcome)
        return f"processed {self.counts.total()}: {outcomes}"


def from_maildir(
    sessions: sessionmaker[DatabaseSession], path: Path, *, keep: bool, clock: Callable[[], datetime]
) -> Iterator[tuple[str, Recorded]]:
    """Record each message in the Maildir's new/ and move it to cur/ (seen), unless `keep`; each one's file name
    and what was recorded."""
    maildir = mailbox.Maildir(path, factory=None, create=False)
    for key in sorted(maildir.keys()):
        message = maildir.get_message(key)
        if message.get_subdir() != "new":
            continue
        recorded = record_mail(sessions, maildir.get_bytes(key), clock=clock)
        if not keep:
            message.set_subdir("cur")
            message.add_flag("S")
            maildir[key] = message
        yield key, recorded


@dataclass(frozen=True)
class MailboxUrl:
    """imaps://user:pass@host[:port]/INBOX, pop3s://user:pass@host[:port]; imap:// and pop3:// without TLS."""

    tls: bool
    host: str
    port: int
    user: str
    password: str
    folder: str

    @classmethod
    def parse(cls, url: str, protocol: str) -> "MailboxUrl":
        parts = urlsplit(url)
        default_ports = {"imap": (143, 993), "pop3": (110, 995)}[protocol]
        if parts.scheme not in (protocol, f"{protocol}s") or not parts.hostname or not parts.username:
            raise InvalidRequest(
                f"a {protocol} URL looks like {protocol}s://user:password@host/, with a user and a host",
                field="url",
            )
        tls = parts.scheme.endswith("s")
        return cls(
            tls=tls,
            host=parts.hostname,
            port=parts.port or default_ports[tls],
            user=unquote(parts.username),
            password=unquote(parts.password or ""),
            folder=unquote(parts.path.lstrip("/")) or "INBOX",
        )


def from_imap(
    sessions: sessionmaker[DatabaseSession], url: MailboxUrl, *, delete: bool, clock: Callable[[], datetime]
) -> Iterator[tuple[str, Recorded]]:
    """Record each unseen message of the folder, then flag it seen (or deleted, and expunge); each one's UID."""
    client = (
        imaplib.IMAP4_SSL(url.host, url.port, ssl_context=ssl.create_default_context())
        if url.tls
        else imaplib.IMAP4(url.host, url.port)
    )
    try:
        client.login(url.user, url.password)
        client.select(url.folder)
        _, found = client.uid("SEARCH", "UNSEEN")
        for uid in found[0].split():
            # BODY.PEEK: reading leaves the message unseen until it is recorded.
            _, fetched = client.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next(item[1] for item in fetched if isinstance(item, tuple))
            recorded = record_mail(sessions, raw, clock=clock)
            client.uid("STORE", uid, "+FLAGS", r"(\Deleted)" if delete else r"(\Seen)")
            yield uid.decode(), recorded
        if delete:
            client.expunge()
    finally:
        client.logout()


def from_pop3(
    sessions: sessionmaker[DatabaseSession], url: MailboxUrl, *, clock: Callable[[], datetime]
) -> Iterator[tuple[str, Recorded]]:
    """Record each message of the mailbox and delete it (POP3 keeps no seen flag); each one's number.

    The server deletes at QUIT, which is sent also when a recording fails: what was recorded before goes.
    """
    client = (
        poplib.POP3_SSL(url.host, url.port, context=ssl.create_default_context())
        if url.tls
        else poplib.POP3(url.host, url.port)
    )
    try:
        client.user(url.user)
        client.pass_(url.password)
        count, _ = client.stat()
        for number in range(1, count + 1):
            _, lines, _ = client.retr(number)
            recorded = record_mail(sessions, b"\r\n".join(lines) + b"\r\n", clock=clock)
            client.dele(number)
            yield str(number), recorded
    finally:
        client.quit()


class BounceReceiver:
    """aiosmtpd handler: accepts mail for the bounce domain only, records each report, then answers 250."""

    def __init__(
        self,
        sessions: sessionmaker[DatabaseSession],
        bounce_domain: str,
        *,
        clock: Callable[[], datetime],
        tally: Tally,
    ) -> None:
        self.sessions = sessions
        self.bounce_domain = bounce_domain
        self.clock = clock
        self.tally = tally

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        if address.rpartition("@")[2].lower() != self.bounce_domain:
            return f"550 5.1.1 <{address}>: not a bounce address of this server"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        try:
            recorded = await asyncio.to_thread(
                record_mail,
                self.sessions,
                envelope.original_content or b"",
                envelope_recipients=list(envelope.rcpt_tos),
                clock=self.clock,
            )
        except SQLAlchemyError:
            # The sending MTA keeps the report and tries again later, as with any 4xx.
            log.exception("could not record a report")
            return "451 4.3.0 could not record the report now, try again later"
        self.tally.add(f"report to {', '.join(envelope.rcpt_tos)}", recorded)
        return "250 2.0.0 report recorded"
