"""Taking in the bounces and complaints that come back after the relay accepted a message."""

from pathlib import Path

import click

from tripmail.cli.helpers import fail
from tripmail.config import get_settings
from tripmail.errors import TripmailError


@click.group()
def bounces() -> None:
    """Bounces and complaints that come back after the relay accepted a message (see TRIPMAIL_BOUNCE_DOMAIN)."""


@bounces.command("maildir")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--keep", is_flag=True, help="Leave each message in new/ (it is read again next time, harmlessly).")
def bounces_maildir(path: Path, keep: bool) -> None:
    """Record the reports in a Maildir's new/, moving each to cur/ once recorded; a line each, then a summary."""
    from tripmail.bounces.flow import Tally, from_maildir
    from tripmail.db import make_sessionmaker
    from tripmail.ids import utcnow

    tally = Tally(click.echo)
    tally.take_in(from_maildir(make_sessionmaker(get_settings()), path, keep=keep, clock=utcnow))
    click.echo(tally.summary())


@bounces.command("imap")
@click.argument("url")
@click.option("--delete", is_flag=True, help="Delete each message once recorded, rather than flag it seen.")
def bounces_imap(url: str, delete: bool) -> None:
    """Record the unseen reports of an IMAP folder (imaps://user:password@host/INBOX), flagging each seen."""
    from tripmail.bounces.flow import MailboxUrl, Tally, from_imap
    from tripmail.db import make_sessionmaker
    from tripmail.ids import utcnow

    try:
        mailbox = MailboxUrl.parse(url, "imap")
    except TripmailError as exc:
        fail(exc)
    tally = Tally(click.echo)
    tally.take_in(from_imap(make_sessionmaker(get_settings()), mailbox, delete=delete, clock=utcnow))
    click.echo(tally.summary())


@bounces.command("pop3")
@click.argument("url")
def bounces_pop3(url: str) -> None:
    """Record the reports of a POP3 mailbox (pop3s://user:password@host), deleting each once recorded."""
    from tripmail.bounces.flow import MailboxUrl, Tally, from_pop3
    from tripmail.db import make_sessionmaker
    from tripmail.ids import utcnow

    try:
        mailbox = MailboxUrl.parse(url, "pop3")
    except TripmailError as exc:
        fail(exc)
    tally = Tally(click.echo)
    tally.take_in(from_pop3(make_sessionmaker(get_settings()), mailbox, clock=utcnow))
    click.echo(tally.summary())


@bounces.command("listen")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=2525, show_default=True, type=int)
def bounces_listen(host: str, port: int) -> None:
    """An SMTP server for the bounce domain: records each report as it arrives, then answers 250; a line each,
    and a summary when stopped (Ctrl-C)."""
    from tripmail.bounces.flow import BounceReceiver, Tally
    from tripmail.db import make_sessionmaker
    from tripmail.ids import utcnow
    from tripmail.mailcatcher import serve_smtp

    settings = get_settings()
    if settings.bounce_domain is None:
        raise click.ClickException("set TRIPMAIL_BOUNCE_DOMAIN to the domain whose mail this server takes")
    tally = Tally(click.echo)
    receiver = BounceReceiver(make_sessionmaker(settings), settings.bounce_domain, clock=utcnow, tally=tally)
    serve_smtp(
        receiver,
        host=host,
        port=port,
        started=lambda: click.echo(f"taking bounces and complaints for @{settings.bounce_domain} on {host}:{port}"),
    )
    click.echo(tally.summary())
