"""Bounces and complaints that come back after the relay accepted a message.

A report is a delivery status notification (RFC 3464, or one of the formats MTAs used before it, which
flufl.bounce reads) or an ARF feedback report (RFC 5965). It is matched to the message it is about by the VERP
address it was sent to (tripmail/delivery/verp.py), else by the original message's Message-ID quoted in it, and recorded
there: a permanent failure of the message's recipient bounces the message and suppresses the address, a
complaint does the same as `complained`, a delay is noted as an attempt. Recording a report twice changes nothing
the second time; a report that names no message is counted, never an error.
"""

import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes, message_from_string
from email.message import Message as Mail
from email.utils import parseaddr
from enum import StrEnum

from flufl.bounce import all_failures
from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from tripmail.delivery.suppressions import suppress
from tripmail.delivery.verp import parse_verp_address
from tripmail.models import Message, MessageAttempt, MessageStatus, SuppressionSource, Workspace
from tripmail.webhooks.delivery_events import announce, event_type_of

log = logging.getLogger(__name__)


class ReportOutcome(StrEnum):
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    DELAYED = "delayed"
    # Names no message of this installation, or carries a return path whose signature does not verify.
    UNMATCHED = "unmatched"
    # About a message, with nothing to record: recorded already, no failure of its recipient, or a message the
    # relay never accepted.
    IGNORED = "ignored"


# Where the relay took the message: only then can a bounce or complaint come back for it.
_ACCEPTED = (MessageStatus.SENT, MessageStatus.UNKNOWN)
# ARF feedback types that are a recipient's complaint (RFC 5965 3.5); `not-spam` and `auth-failure` are not.
_COMPLAINT_TYPES = {"abuse", "fraud", "virus", "other"}
# Where a bounce's recipient shows once it is in a mailbox: the delivering MTA's record of the envelope recipient.
_RECIPIENT_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "To")
# Tripmail's Message-ID, `<event id>.<message id>@<sender domain>` (tripmail.delivery.mime.message_id_header).
_TRIPMAIL_MESSAGE_ID = re.compile(r"<[^<>.@\s]+\.(\d+)@[^<>@\s]+>")
_MESSAGE_ID_LINE = re.compile(r"^message-id:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
# A line of a human-readable bounce that carries an SMTP reply code or an enhanced status code.
_STATUS_LINE = re.compile(r"(?<![\d.])(?:[45]\d\d[ -]|[45]\.\d{1,3}\.\d{1,3}\b)")
_SMTP_CODE = re.compile(r"\s*([45]\d\d)\b")
_LONGEST_DIAGNOSTIC = 500
# Ids past the database's integer column name no message; looked up, they would overflow the driver's integer.
_LARGEST_ID = 2**63 - 1


@dataclass(frozen=True)
class Report:
    """What a bounce or complaint says, read from the mail alone."""

    complaint: bool
    # Lower-cased addresses the report says failed for good, and for now.
    permanent: frozenset[str]
    temporary: frozenset[str]
    # The addresses it was sent to and the original's envelope sender: where a VERP address shows.
    return_paths: tuple[str, ...]
    # Message-IDs of the original message quoted in it.
    original_message_ids: tuple[str, ...]
    # Who reported it: the reporting MTA, else the report's From address.
    reporter: str
    # The report's own Message-ID, so a second report about the same message is told from a repeat of the first.
    report_id: str | None = None
    # Diagnostic text by lower-cased recipient, from the report's machine-readable part.
    diagnostics: dict[str, str] = field(default_factory=dict)
    # The entries of its human-readable notice (a line and the indented lines under it), for formats that have
    # nothing else.
    notice: tuple[str, ...] = ()
    feedback_type: str | None = None

    def diagnostic(self, address: str) -> str:
        """Why delivery to `address` failed, as the report puts it."""
        if address in self.diagnostics:
            return self.diagnostics[address]
        coded = next((entry for entry in self.notice if _STATUS_LINE.search(entry)), None)
        naming = next((entry for entry in self.notice if address in entry.lower()), None)
        return (coded or naming or "no diagnostic given")[:_LONGEST_DIAGNOSTIC]


def read_report(raw: bytes, envelope_recipients: Sequence[str] = ()) -> Report:
    """Read a bounce or complaint; `envelope_recipients` are the addresses it was delivered to, when known."""
    mail = message_from_bytes(raw)
    temporary, permanent = _failures(mail)
    # The machine-readable parts: a DSN's per-message and per-recipient blocks, an ARF report's one block.
    blocks = [
        block
        for content_type in ("message/delivery-status", "message/feedback-report")
        for part in _parts(mail, content_type)
        for block in _blocks(part)
    ]
    originals = list(_original_headers(mail))
    feedback_type = next(
        (str(block["Feedback-Type"]).strip().lower() for block in blocks if block["Feedback-Type"]), None
    )
    reporting_mta = next((str(block["Reporting-MTA"]) for block in blocks if block["Reporting-MTA"]), None)
    return_paths = [
        *envelope_recipients,
        *(value for name in _RECIPIENT_HEADERS for value in mail.get_all(name, [])),
        *(value for headers in originals for value in headers.get_all("Return-Path", [])),
        # ARF: the original's envelope sender, as the receiving MTA saw it.
        *(str(block["Original-Mail-From"]) for block in blocks if block["Original-Mail-From"]),
    ]
    return Report(
        complaint=feedback_type in _COMPLAINT_TYPES,
        permanent=frozenset(address.decode("ascii").lower() for address in permanent),
        temporary=frozenset(address.decode("ascii").lower() for address in temporary),
        return_paths=tuple(str(address) for address in return_paths),
        original_message_ids=tuple(_original_message_ids(mail, originals)),
        reporter=_typed_value(reporting_mta) if reporting_mta else parseaddr(str(mail["From"] or ""))[1] or "unknown",
        report_id=" ".join(str(mail["Message-ID"]).split()) if mail["Message-ID"] else None,
        diagnostics=_diagnostics(blocks),
        notice=tuple(_notice(mail)),
        feedback_type=feedback_type,
    )


def _failures(mail: Mail) -> tuple[frozenset[bytes], frozenset[bytes]]:
    # Any exception: its heuristics meet mail from anyone, and one they trip on must not stop the intake.
    try:
        return all_failures(mail)
    except Exception:
        log.warning("could not read the report's failures; taking it for a report of none", exc_info=True)
        return frozenset(), frozenset()


def _parts(mail: Mail, content_type: str) -> Iterator[Mail]:
    return (part for part in mail.walk() if part.get_content_type() == content_type)


def _blocks(part: Mail) -> list[Mail]:
    """The header blocks of a message/delivery-status or message/feedback-report part, as the parser left them."""
    payload = part.get_payload()
    return [block for block in payload if isinstance(block, Mail)] if isinstance(payload, list) else []


def _typed_value(value: str) -> str:
    """`rfc822; a@b` or `dns; mx.example.com` -> the value after its type."""
    return " ".join(value.partition(";")[2].split()) or value.strip()


def _diagnostics(blocks: Iterable[Mail]) -> dict[str, str]:
    diagnostics = {}
    for block in blocks:
        code = block.get("Diagnostic-Code")
        status = block.get("Status")
        text = _typed_value(str(code)) if code else f"status {' '.join(str(status).split())}" if status else None
        if text is None:
            continue
        for name in ("Original-Recipient", "Final-Recipient"):
            if value := block.get(name):
                diagnostics[parseaddr(_typed_value(str(value)))[1].lower()] = text[:_LONGEST_DIAGNOSTIC]
    return diagnostics


def _original_headers(mail: Mail) -> Iterator[Mail]:
    """The original message's headers, as a message/rfc822 or text/rfc822-headers part quotes them."""
    for part in mail.walk():
        if part.get_content_type() == "message/rfc822":
            yield from _blocks(part)
        elif part.get_content_type() == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                yield message_from_string(payload.decode("utf-8", "replace"))


def _original_message_ids(mail: Mail, originals: list[Mail]) -> Iterator[str]:
    for headers in originals:
        if headers["Message-ID"]:
            yield " ".join(str(headers["Message-ID"]).split())
    # Formats without MIME quote the original after the notice, as plain text.
    for part in _parts(mail, "text/plain"):
        yield from _MESSAGE_ID_LINE.findall(_text(part))


def _text(part: Mail) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return ""
    return payload.decode(part.get_content_charset() or "utf-8", "replace")


def _notice(mail: Mail) -> Iterator[str]:
    """The first plain-text part, the notice a person reads, in entries: a line and the indented lines under it
    (`<a@b>: host mx said: 550 ...` and its continuation), each on one line."""
    first = next(_parts(mail, "text/plain"), None)
    entry: list[str] = []
    for line in _text(first).splitlines() if first is not None else []:
        if entry and (not line.strip() or not line[:1].isspace()):
            yield " ".join(" ".join(entry).split())
            entry = []
        if line.strip():
            entry.append(line)
    if entry:
        yield " ".join(" ".join(entry).split())


@dataclass(frozen=True)
class Recorded:
    outcome: ReportOutcome
    detail: str
    message_id: int | None = None


def record_report(session: Session, report: Report, *, now: datetime, workspace_id: int | None = None) -> Recorded:
    """Find the message a report is about and record what it says there; flushes, never commits.

    With `workspace_id`, only that workspace's messages match: a report posted with a workspace's token never
    touches another's.
    """
    message, unmatched = _matching_message(session, report, workspace_id)
    if message is None:
        log.info("report from %s unmatched: %s", report.reporter, unmatched, extra={"outcome": "unmatched"})
        return Recorded(ReportOutcome.UNMATCHED, unmatched)
    recorded = _record(session, report, message, now=now)
    log.info(
        "report from %s about message %d: %s, %s",
        report.reporter,
        message.id,
        recorded.outcome,
        recorded.detail,
        extra={"workspace_id": message.workspace_id, "message_id": message.id, "outcome": recorded.outcome.value},
    )
    return recorded


def _matching_message(session: Session, report: Report, workspace_id: int | None) -> tuple[Message | None, str]:
    """The message by the report's return path, else by the original's Message-ID; else why there is none."""
    return_paths = [(address, verp) for address in report.return_paths if (verp := parse_verp_address(address))]
    for _, verp in return_paths:
        if verp.message_id > _LARGEST_ID:
            continue
        query = (
            select(Message, Workspace.unsubscribe_secret)
            .join(Workspace, Workspace.id == Message.workspace_id)
            .where(Message.id == verp.message_id)
        )
        if workspace_id is not None:
            query = query.where(Message.workspace_id == workspace_id)
        row = session.execute(query).one_or_none()
        if row is not None and verp.signed_by(row.unsubscribe_secret):
            return row.Message, ""
    if return_paths:
        # A forged or mangled return path: the report is not trusted any further, Message-ID included.
        names = ", ".join(parseaddr(address)[1] for address, _ in return_paths)
        return None, f"return path {names} names no message, or its signature does not verify"
    for header in report.original_message_ids:
        found = _TRIPMAIL_MESSAGE_ID.fullmatch(header)
        message = session.get(Message, int(found.group(1))) if found and int(found.group(1)) <= _LARGEST_ID else None
        if message is None or workspace_id not in (None, message.workspace_id):
            continue
        if message.message_id_header == header:
            return message, ""
    if report.original_message_ids:
        return None, f"Message-ID {', '.join(report.original_message_ids)} is none of Tripmail's messages"
    return None, "it names no return path of Tripmail's and quotes no Message-ID"


def record_reports(
    session: Session, reports: Iterable[Report | None], *, now: datetime, workspace_id: int
) -> Counter[ReportOutcome]:
    """Record a provider's batch of reports about the workspace's messages; None stands for an event with nothing
    to record (a delivery, an open), counted as ignored. Flushes, never commits."""
    outcomes: Counter[ReportOutcome] = Counter()
    for report in reports:
        recorded = record_report(session, report, now=now, workspace_id=workspace_id) if report else None
        outcomes[recorded.outcome if recorded else ReportOutcome.IGNORED] += 1
    return outcomes


def bracketed_message_id(value: str) -> str:
    """A Message-ID as its header writes it, `<id@domain>`: some providers echo it without the brackets."""
    bare = value.strip().strip("<>").strip()
    return f"<{bare}>"


def _record(session: Session, report: Report, message: Message, *, now: datetime) -> Recorded:
    recipient = message.to_address.lower()
    if report.complaint:
        reply = f"complaint ({report.feedback_type}) reported by {report.reporter}"
        return _settle(session, message, MessageStatus.COMPLAINED, None, reply, SuppressionSource.COMPLAINT, now=now)
    if recipient in report.permanent:
        diagnostic = report.diagnostic(recipient)
        code = _SMTP_CODE.match(diagnostic)
        reply = f"bounce reported by {report.reporter}: {diagnostic}"
        smtp_code = int(code.group(1)) if code else None
        return _settle(session, message, MessageStatus.BOUNCED, smtp_code, reply, SuppressionSource.BOUNCE, now=now)
    if recipient in report.temporary:
        return _note_delay(session, report, message, now=now)
    named = sorted(report.permanent | report.temporary)
    detail = f"it reports failures of {', '.join(named)}, not of {recipient}" if named else "it reports no failure"
    return Recorded(ReportOutcome.IGNORED, detail, message.id)


def _settle(
    session: Session,
    message: Message,
    status: MessageStatus,
    smtp_code: int | None,
    reply: str,
    source: SuppressionSource,
    *,
    now: datetime,
) -> Recorded:
    """Move an accepted message to `status` once, with an attempt row, and suppress its address."""
    outcome = ReportOutcome(status.value)
    # Conditional, so of two intakes recording the same report at once, one does.
    moved = session.scalar(
        update(Message)
        .where(Message.id == message.id, Message.status.in_(_ACCEPTED))
        .values(status=status, smtp_code=smtp_code, smtp_reply=reply, updated_at=now)
        .returning(Message.id)
        .execution_options(synchronize_session=False)
    )
    if moved is None:
        detail = "recorded already" if message.status == status else f"the message is {message.status}, left so"
        return Recorded(ReportOutcome.IGNORED, detail, message.id)
    session.add(
        MessageAttempt(message_id=message.id, attempted_at=now, outcome=outcome, smtp_code=smtp_code, smtp_reply=reply)
    )
    suppress(session, message.workspace_id, message.to_address, reply, now=now, source=source)
    announce(session, message.workspace_id, [message.id], event_type_of(status), now=now)
    return Recorded(outcome, f"{message.to_address}: {reply}", message.id)


def _note_delay(session: Session, report: Report, message: Message, *, now: datetime) -> Recorded:
    if message.status not in _ACCEPTED:
        return Recorded(ReportOutcome.IGNORED, f"a delay of a message that is {message.status}", message.id)
    diagnostic = report.diagnostic(message.to_address.lower())
    reply = f"delay reported by {report.reporter}" + (f" in {report.report_id}" if report.report_id else "")
    reply += f": {diagnostic}"
    noted = session.scalar(
        select(
            exists().where(
                MessageAttempt.message_id == message.id,
                MessageAttempt.outcome == ReportOutcome.DELAYED,
                MessageAttempt.smtp_reply == reply,
            )
        )
    )
    if noted:
        return Recorded(ReportOutcome.IGNORED, "this delay is recorded already", message.id)
    code = _SMTP_CODE.match(diagnostic)
    session.add(
        MessageAttempt(
            message_id=message.id,
            attempted_at=now,
            outcome=ReportOutcome.DELAYED,
            smtp_code=int(code.group(1)) if code else None,
            smtp_reply=reply,
        )
    )
    return Recorded(ReportOutcome.DELAYED, f"{message.to_address}: {reply}", message.id)
