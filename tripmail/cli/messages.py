"""The operator's commands over stored messages: list them, send unknown or failed ones again."""

from datetime import datetime

import click

from tripmail.cli.helpers import find_workspace_id
from tripmail.config import get_settings


@click.group()
def messages() -> None:
    """Messages: what was sent, and the ones whose fate is unknown."""


@messages.command("list")
@click.option(
    "--status",
    default="unknown",
    show_default=True,
    help="pending, sending, sent, failed, suppressed, unknown, bounced, complained",
)
@click.option("--limit", default=100, show_default=True, type=int)
def messages_list(status: str, limit: int) -> None:
    """List messages by status, newest first, with their last SMTP reply."""
    from sqlalchemy import select

    from tripmail.db import make_sessionmaker
    from tripmail.models import Message

    with make_sessionmaker(get_settings())() as session:
        rows = session.scalars(
            select(Message).where(Message.status == status).order_by(Message.id.desc()).limit(limit)
        ).all()
    for message in rows:
        click.echo(
            f"{message.id}  {message.updated_at:%Y-%m-%d %H:%M:%S}  {message.to_address}  "
            f"{message.message_id_header or '-'}  {message.smtp_reply or ''}"
        )
    click.echo(f"{len(rows)} {status} message(s)")


@messages.command("resend")
@click.argument("message_ids", nargs=-1, type=int)
@click.option(
    "--status",
    type=click.Choice(["unknown", "failed"]),
    help="Every message in this status (with --since and --workspace to narrow it), instead of ids.",
)
@click.option("--since", help="With --status: last changed within this long (2h, 3d) or since this ISO time.")
@click.option("--workspace", help="With --status: only this workspace's messages.")
def messages_resend(message_ids: tuple[int, ...], status: str | None, since: str | None, workspace: str | None) -> None:
    """Send unknown or failed messages again, by id or by status; a message that was sent is never sent again.

    An unknown message may have reached the relay: resend it once the relay's logs show it did not. Each resent
    message gets a fresh series of tries (TRIPMAIL_SEND_RETRY_SCHEDULE, TRIPMAIL_SEND_GIVE_UP_AFTER).
    """

    from tripmail import queue
    from tripmail.automations.program import messages_by_lane
    from tripmail.db import make_sessionmaker
    from tripmail.delivery.retries import resend_messages, resendable_ids
    from tripmail.ids import utcnow
    from tripmail.models import Message

    if bool(message_ids) == (status is not None):
        raise click.UsageError("give message ids or --status unknown|failed, not both")
    if status is None and (since or workspace):
        raise click.UsageError("--since and --workspace narrow --status; they do not apply to ids")
    settings = get_settings()
    sessions = make_sessionmaker(settings)
    now = utcnow()
    if status is not None:
        since_time = _since(since, now=now) if since else None
        with sessions() as session:
            workspace_id = None if workspace is None else find_workspace_id(session, workspace)
            message_ids = tuple(resendable_ids(session, status=status, since=since_time, workspace_id=workspace_id))
        click.echo(f"{len(message_ids)} {status} message(s) found")
    publisher = queue.make_celery(settings)
    queued: list[int] = []
    not_resendable: list[int] = []
    suppressed: list[int] = []
    # In batches: each is one transaction and one task, and a long list shows its progress.
    for start in range(0, len(message_ids), settings.send_batch_size):
        with sessions.begin() as session:
            resent = resend_messages(session, list(message_ids[start : start + settings.send_batch_size]), now=now)
            lanes = messages_by_lane(session, Message.id.in_(resent.queued))
        for transactional, ids in lanes.lanes():
            publisher.send_task(queue.DELIVER_MESSAGES, args=[ids], queue=queue.queue_for(transactional=transactional))
        queued += resent.queued
        not_resendable += resent.not_resendable
        suppressed += resent.suppressed
        if len(message_ids) > settings.send_batch_size:
            click.echo(
                f"{min(start + settings.send_batch_size, len(message_ids))}/{len(message_ids)} looked at", err=True
            )
    click.echo(f"queued {len(queued)} message(s) to send again: {_some(queued)}")
    if suppressed:
        click.echo(f"to a suppressed address, left as they are (remove the suppression first): {_some(suppressed)}")
    if not_resendable:
        click.echo(f"not unknown or failed (a sent one is never sent again), left as they are: {_some(not_resendable)}")


def _some(ids: list[int], shown: int = 50) -> str:
    """Ids for a person to read: all of a few, the first of many."""
    if not ids:
        return "-"
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return " ".join(map(str, ids[:shown])) + more


def _since(value: str, *, now: datetime) -> datetime:
    """A duration back from now (2h, 3d) or an ISO time (UTC unless it says otherwise)."""
    from datetime import UTC, timedelta

    from tripmail.durations import parse_duration

    try:
        return now - timedelta(seconds=parse_duration(value))
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration (2h, 3d) nor an ISO time (2026-12-01T08:00)", param_hint="--since"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
