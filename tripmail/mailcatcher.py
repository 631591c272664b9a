"""A local SMTP server that keeps every message it receives as an .eml file, so `make run` mail can be read."""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email import message_from_bytes
from email.policy import default
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tripmail.ids import new_id, utcnow

log = logging.getLogger(__name__)


class MailCatcher:
    """aiosmtpd handler: writes each message to `directory` and answers 250."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        content = envelope.original_content or b""
        name = f"{utcnow():%Y%m%dT%H%M%S}-{new_id()}.eml"
        (self.directory / name).write_bytes(content)
        parsed = message_from_bytes(content, policy=default)
        log.info(
            "received %s -> %s: %s (%s)",
            envelope.mail_from,
            ", ".join(envelope.rcpt_tos),
            parsed["Subject"],
            name,
        )
        return "250 OK stored"


@dataclass(frozen=True)
class CaughtMail:
    path: Path
    received_at: datetime
    sender: str
    recipients: str
    subject: str


def list_mail(directory: Path) -> list[CaughtMail]:
    """Stored messages, oldest first (file names start with the arrival time)."""
    if not directory.is_dir():
        return []
    caught = []
    for path in sorted(directory.glob("*.eml")):
        parsed = message_from_bytes(path.read_bytes(), policy=default)
        caught.append(
            CaughtMail(
                path=path,
                received_at=datetime.fromtimestamp(path.stat().st_mtime).astimezone(),
                sender=str(parsed["From"] or ""),
                recipients=str(parsed["To"] or ""),
                subject=str(parsed["Subject"] or ""),
            )
        )
    return caught


def serve(directory: Path, *, host: str, port: int) -> None:
    """Run until interrupted."""
    serve_smtp(
        MailCatcher(directory),
        host=host,
        port=port,
        started=lambda: log.info("mail catcher listening on %s:%d, storing under %s", host, port, directory),
    )


def serve_smtp(handler: object, *, host: str, port: int, started: Callable[[], None]) -> None:
    """Serve an aiosmtpd handler until interrupted (Ctrl-C); `started` once it listens."""
    # aiosmtpd logs every SMTP command at INFO; the handler's own line per message is what a user wants.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    controller = Controller(handler, hostname=host, port=port)
    controller.start()
    started()
    try:
        asyncio.run(_forever())
    except KeyboardInterrupt:
        pass
    finally:
        controller.stop()


async def _forever() -> None:
    await asyncio.Event().wait()
