"""Bounces and complaints that come back after the relay's 250, through the whole stack: an event is mailed with a
VERP return path, then real DSNs and an ARF complaint about it reach `tripmail bounces listen` over SMTP or
`tripmail bounces maildir`, and the message, the suppression list and the next event show what they said."""

import mailbox
import signal
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.bounce_samples import COMPLAINT, DELAYED, POSTFIX, SENDMAIL
from tests.support.builders import Tenant, unique_workspace_key
from tests.support.event_posts import post
from tests.support.message_states import message_of_event_settled, message_state
from tests.support.polling import wait_until
from tests.support.ports import free_port
from tests.support.smtp_sink import Sink, running_sink
from tests.support.stack import OwnStack, service_env
from tripmail.config import Settings
from tripmail.delivery.verp import verp_address
from tripmail.models import Message, Workspace

BOUNCE_DOMAIN = "bounces.tripmail.test"


@pytest.fixture
def own_settings(own_settings: Settings) -> Settings:
    """The test's own stack, sending with VERP return paths at BOUNCE_DOMAIN."""
    return own_settings.model_copy(update={"bounce_domain": BOUNCE_DOMAIN})


@pytest.fixture
def sink(stack: OwnStack) -> Iterator[Sink]:
    """The relay the stack's worker sends to, and the worker."""
    with running_sink(stack.smtp_port) as sink:
        stack.start_worker()
        yield sink


def mailed(stack: OwnStack, sink: Sink, tenant: Tenant, email: str) -> Message:
    """Post an event to `email` and wait until its message is sent; it arrived at the sink from its return path."""
    event_id = post(stack.api_url, tenant, email).json()["id"]
    message = wait_until(lambda: message_of_event_settled(stack.db, event_id), timeout=60, what="the message sent")
    assert message.status == "sent"
    [mail] = sink.to(email)
    with stack.db() as session:
        secret = session.scalars(select(Workspace.unsubscribe_secret).where(Workspace.key == tenant.key)).one()
    assert mail.mail_from == verp_address(message.id, secret, BOUNCE_DOMAIN)
    assert mail.message["From"] == f"Acme <{tenant.sender}>"
    assert str(mail.message["Message-ID"]).strip() == message.message_id_header
    return message


def next_event_is_suppressed(stack: OwnStack, sink: Sink, tenant: Tenant, email: str) -> None:
    event_id = post(stack.api_url, tenant, email).json()["id"]
    later = wait_until(lambda: message_of_event_settled(stack.db, event_id), what="the next message")
    assert (later.status, later.attempts) == ("suppressed", 0)
    assert len(sink.to(email)) == 1  # the first message only


@pytest.fixture
def listener(stack: OwnStack) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """`tripmail bounces listen` on a free port; its port and process, whose output the test reads."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tripmail", "bounces", "listen", "--port", str(port)],
        env=service_env(stack.settings),
        stdout=subprocess.PIPE,
        stderr=(stack.workdir / "bounces-listen.log").open("wb"),
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith(f"taking bounces and complaints for @{BOUNCE_DOMAIN}")
    yield port, process
    if process.poll() is None:
        process.kill()
        process.wait(timeout=10)


def send_report(port: int, recipient: str, report: bytes) -> None:
    """Deliver a report as a remote MTA does: from the null sender, to the return path."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("", [recipient], report.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def test_reports_over_smtp_bounce_the_message_once_and_the_next_event_is_suppressed(
    stack: OwnStack, sink: Sink, listener: tuple[int, subprocess.Popen[str]]
) -> None:
    port, process = listener
    tenant = stack.tenant("bounced")
    email = f"{unique_workspace_key('gone')}@example.com"
    message = mailed(stack, sink, tenant, email)
    return_path = sink.to(email)[0].mail_from
    forged = return_path.replace("-", "-0", 1)

    send_report(port, forged, POSTFIX.adapted(return_path=forged, recipient=email))
    assert message_state(stack.db, message.id) == ("sent", ["sent"], [])

    send_report(port, return_path, DELAYED.adapted(return_path=return_path, recipient=email))
    assert message_state(stack.db, message.id) == ("sent", ["sent", "delayed"], [])

    bounce = POSTFIX.adapted(return_path=return_path, recipient=email)
    send_report(port, return_path, bounce)
    bounced = ("bounced", ["sent", "delayed", "bounced"], [(email, "bounce")])
    assert message_state(stack.db, message.id) == bounced
    with stack.db() as session:
        reply = session.get_one(Message, message.id).smtp_reply
    assert reply == f"bounce reported by MAILER-DAEMON@mail.wooz.org: <{email}>: Name service error for domain " + (
        "digicool.com: Host not found, try again"
    )

    send_report(port, return_path, bounce)
    assert message_state(stack.db, message.id) == bounced

    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send_report(port, f"postmaster@{tenant.key}.example.com", bounce)
    [(code, text)] = refused.value.recipients.values()
    assert (code, text.split()[0]) == (550, b"5.1.1")

    next_event_is_suppressed(stack, sink, tenant, email)

    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert output.splitlines()[-1] == "processed 4: 1 bounced, 0 complained, 1 delayed, 1 unmatched, 1 ignored"


def test_reports_in_a_maildir_bounce_and_complain_once_each(stack: OwnStack, sink: Sink, tmp_path: Path) -> None:
    tenant = stack.tenant("maildir")
    gone = f"{unique_workspace_key('gone')}@example.com"
    annoyed = f"{unique_workspace_key('annoyed')}@example.com"
    bounced = mailed(stack, sink, tenant, gone)
    complained = mailed(stack, sink, tenant, annoyed)
    inbox = mailbox.Maildir(tmp_path / "bounces", create=True)
    # Matched by the quoted Message-ID: this report went to the sender's own address, not to the return path.
    inbox.add(SENDMAIL.adapted(recipient=gone, message_id=bounced.message_id_header))
    return_path = sink.to(annoyed)[0].mail_from
    inbox.add(COMPLAINT.adapted(return_path=return_path, recipient=annoyed))

    first = stack.tripmail("bounces", "maildir", str(tmp_path / "bounces"))
    again = stack.tripmail("bounces", "maildir", str(tmp_path / "bounces"))

    assert first.splitlines()[-1] == "processed 2: 1 bounced, 1 complained, 0 delayed, 0 unmatched, 0 ignored"
    assert again.splitlines() == ["processed 0: 0 bounced, 0 complained, 0 delayed, 0 unmatched, 0 ignored"]
    assert sorted(path.parent.name for path in (tmp_path / "bounces").glob("*/*")) == ["cur", "cur"]
    suppressions = [(gone, "bounce"), (annoyed, "complaint")]
    assert message_state(stack.db, bounced.id) == ("bounced", ["sent", "bounced"], suppressions)
    assert message_state(stack.db, complained.id) == ("complained", ["sent", "complained"], suppressions)
    next_event_is_suppressed(stack, sink, tenant, gone)
    next_event_is_suppressed(stack, sink, tenant, annoyed)
