"""`tripmail`: every command reads the same TRIPMAIL_* settings."""

import os
import sys
from collections.abc import MutableMapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from tripmail.config import get_settings
from tripmail.errors import TripmailError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def _fail(exc: TripmailError) -> NoReturn:
    raise click.ClickException(exc.detail) from exc


# Python's and Celery's names alike.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@click.group()
@click.version_option(package_name="tripmail", prog_name="tripmail")
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    help="Logging level of every command, the worker's Celery included.",
)
@click.pass_context
def main(context: click.Context, log_level: str) -> None:
    """Tripmail: application events in, email out."""
    from pydantic import ValidationError

    from tripmail.config import describe_refusal
    from tripmail.logs import configure

    # Every command checks the settings here, before it starts anything: the api, worker and scheduler refuse
    # to start on a setting they would refuse later.
    try:
        settings = get_settings()
    except ValidationError as exc:
        raise click.ClickException(f"invalid settings:\n{describe_refusal(exc)}") from None
    configure(log_level, log_format=settings.log_format)
    context.obj = log_level.upper()


def _count_in_files(env: MutableMapping[str, str], role: str) -> None:
    """prometheus-client's multiprocess mode for the processes started with `env`: each counts into files of a
    directory of their own, made empty so nothing an earlier run counted is counted again, and a scrape sums them."""
    import tempfile

    from tripmail.metrics import MULTIPROCESS_DIR

    env[MULTIPROCESS_DIR] = tempfile.mkdtemp(prefix=f"tripmail-{role}-metrics-")


@main.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    from tripmail.migrations import upgrade

    upgrade(get_settings().database_url)
    click.echo("database is at the latest schema")


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def apply(file: Path) -> None:
    """Make the database match FILE.yaml (workspace, event types, templates, automations); idempotent."""
    from tripmail.db import make_sessionmaker
    from tripmail.ids import utcnow
    from tripmail.setup.apply import apply_file
    from tripmail.setup.spec import load_apply_file

    try:
        spec = load_apply_file(file)
        with make_sessionmaker(get_settings()).begin() as session:
            changes = apply_file(session, spec, now=utcnow())
    except TripmailError as exc:
        _fail(exc)
    for change in changes:
        click.echo(change)
    click.echo(f"{file}: {len(changes)} change(s)" if changes else f"{file}: already applied, nothing changed")


@main.group()
def token() -> None:
    """API tokens."""


@token.command("create")
@click.option("--workspace", required=True, help="Workspace key, as in the apply file.")
@click.option("--scopes", default="events:write", show_default=True, help="Comma-separated scopes.")
def token_create(workspace: str, scopes: str) -> None:
    """Create a token; its secret is printed once, on the last line, and never stored."""
    from sqlalchemy import select

    from tripmail.db import make_sessionmaker
    from tripmail.ids import utcnow
    from tripmail.models import Workspace
    from tripmail.setup.tokens import create_token_row, parse_scopes

    try:
        scope_list = parse_scopes(scopes)
    except TripmailError as exc:
        _fail(exc)
    with make_sessionmaker(get_settings()).begin() as session:
        row = session.scalars(select(Workspace).where(Workspace.key == workspace)).one_or_none()
        if row is None:
            raise click.ClickException(f"no workspace {workspace!r}: create it with `tripmail apply FILE.yaml`")
        token, secret = create_token_row(session, row, scope_list, now=utcnow())
    click.echo(
        f"token {token.id} ({token.prefix}…) for workspace {workspace} with scopes {','.join(scope_list)} "
        "(shown once; store it now):"
    )
    click.echo(secret)


@token.command("list")
@click.option("--workspace", help="Only this workspace's tokens. [default: every workspace's]")
def token_list(workspace: str | None) -> None:
    """List tokens, oldest first: id, workspace, the secret's first characters, scopes, created, revoked."""

    from tripmail.db import make_sessionmaker
    from tripmail.setup.tokens import list_tokens

    with make_sessionmaker(get_settings())() as session:
        if workspace is not None:
            _workspace_id(session, workspace)
        rows = list_tokens(session, workspace)
    for token, key in rows:
        revoked = f"revoked {token.revoked_at:%Y-%m-%d %H:%M:%S}" if token.revoked_at else "live"
        click.echo(
            f"{token.id}  {key}  {token.prefix}…  {','.join(token.scopes)}  "
            f"created {token.created_at:%Y-%m-%d %H:%M:%S}  {revoked}"
        )
    click.echo(f"{len(rows)} token(s)" + (f" of workspace {workspace}" if workspace else ""))


@token.command("revoke")
@click.argument("token_ids", nargs=-1, required=True, type=int)
def token_revoke(token_ids: tuple[int, ...]) -> None:
    """Revoke tokens by id (`tripmail token list`): every api process refuses them from their next request.

    Idempotent. When one id is unknown, none is revoked.
    """
    from redis import Redis
    from redis.exceptions import RedisError

    from tripmail.db import make_sessionmaker
    from tripmail.ids import utcnow
    from tripmail.setup.tokens import mark_revoked, revoke_tokens

    settings = get_settings()
    try:
        with make_sessionmaker(settings).begin() as session:
            revocations = revoke_tokens(session, token_ids, now=utcnow())
    except TripmailError as exc:
        _fail(exc)
    for revocation in revocations:
        state = "was already revoked" if revocation.already else "revoked"
        click.echo(
            f"token {revocation.token_id} of workspace {revocation.workspace_key} {state} "
            f"at {revocation.revoked_at:%Y-%m-%d %H:%M:%S} UTC"
        )
    # After the commit: an api process that finds the marker and reads the database again must read revoked.
    revoked_now = [revocation.token_id for revocation in revocations if not revocation.already]
    store = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        mark_revoked(store, revoked_now, ttl_s=settings.revoked_marker_s)
    except RedisError as exc:
        click.echo(
            f"warning: Redis (TRIPMAIL_REDIS_URL) is unreachable ({exc}): the tokens are revoked in the database, "
            f"but running api processes may accept them for up to {settings.setup_cache_s:g} s "
            "(TRIPMAIL_SETUP_CACHE_S)",
            err=True,
        )
    finally:
        store.close()


@main.group()
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
            workspace_id = None if workspace is None else _workspace_id(session, workspace)
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


def _workspace_id(session: "Session", key: str) -> int:
    """The id of the workspace with this key; a ClickException names a key that no workspace has."""
    from sqlalchemy import select

    from tripmail.models import Workspace

    found = session.scalars(select(Workspace.id).where(Workspace.key == key)).first()
    if found is None:
        raise click.ClickException(f"no workspace {key!r}")
    return found


@main.group()
def suppressions() -> None:
    """Suppressions: the addresses a workspace no longer mails (hard bounces, and entries added by hand)."""


@suppressions.command("list")
@click.option("--workspace", help="Only this workspace's suppressions. [default: every workspace's]")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
def suppressions_list(workspace: str | None, limit: int) -> None:
    """List suppressions, newest first: email, source (smtp or manual), time, reason."""
    from tripmail.db import make_sessionmaker
    from tripmail.delivery.suppressions import recent_suppressions

    with make_sessionmaker(get_settings())() as session:
        workspace_id = None if workspace is None else _workspace_id(session, workspace)
        rows = recent_suppressions(session, workspace_id=workspace_id, limit=limit)
    for suppression, key in rows:
        # Every workspace's list names each entry's workspace; one workspace's has no need to.
        where = "" if workspace else f"{key}  "
        click.echo(
            f"{where}{suppression.email}  {suppression.source}  "
            f"{suppression.created_at:%Y-%m-%d %H:%M:%S}  {suppression.reason}".rstrip()
        )
    click.echo(f"{len(rows)} suppression(s)" + (f" of workspace {workspace}" if workspace else ""))


@suppressions.command("add")
@click.option("--workspace", required=True, help="Workspace key, as in the apply file.")
@click.option("--reason", default="", help="Why the workspace stops mailing these addresses.")
@click.argument("emails", nargs=-1, required=True)
def suppressions_add(workspace: str, reason: str, emails: tuple[str, ...]) -> None:
    """Stop mailing these addresses (transactional mail too); one suppressed already stays as it is."""
    from tripmail.db import make_sessionmaker
    from tripmail.delivery.suppressions import add_suppressions
    from tripmail.ids import utcnow

    try:
        with make_sessionmaker(get_settings()).begin() as session:
            added = add_suppressions(session, _workspace_id(session, workspace), emails, reason=reason, now=utcnow())
    except TripmailError as exc:
        _fail(exc)
    for entry in added:
        suppression = entry.suppression
        if entry.created:
            click.echo(f"suppressed {suppression.email} in workspace {workspace}")
        else:
            click.echo(
                f"{suppression.email} was already suppressed ({suppression.source}, "
                f"{suppression.created_at:%Y-%m-%d %H:%M:%S}), left as it is"
            )


@suppressions.command("remove")
@click.option("--workspace", required=True, help="Workspace key, as in the apply file.")
@click.argument("emails", nargs=-1, required=True)
def suppressions_remove(workspace: str, emails: tuple[str, ...]) -> None:
    """Mail these addresses again: the next event to each is sent."""
    from tripmail.db import make_sessionmaker
    from tripmail.delivery.suppressions import remove_suppressions

    try:
        with make_sessionmaker(get_settings()).begin() as session:
            removed = remove_suppressions(session, _workspace_id(session, workspace), emails)
    except TripmailError as exc:
        _fail(exc)
    for address, was_suppressed in removed.items():
        click.echo(
            f"removed {address} from the suppressions of workspace {workspace}"
            if was_suppressed
            else f"{address} was not suppressed in workspace {workspace}"
        )


@main.group()
def webhooks() -> None:
    """Webhook endpoints: where a workspace's delivery events (message.sent, message.failed, ...) are POSTed."""


@webhooks.command("add")
@click.option("--workspace", required=True, help="Workspace key, as in the apply file.")
@click.option(
    "--events",
    help="Comma-separated event types it receives (message.sent, message.failed, message.bounced, "
    "message.complained, message.unknown, message.suppressed). [default: all]",
)
@click.option("--disabled", is_flag=True, help="Register it without sending it anything yet.")
@click.argument("url")
def webhooks_add(workspace: str, events: str | None, disabled: bool, url: str) -> None:
    """Register an endpoint; its signing secret is printed once, on the last line."""
    from tripmail.db import make_sessionmaker
    from tripmail.ids import utcnow
    from tripmail.webhooks.delivery_events import add_endpoint

    event_types = None if events is None else [name.strip() for name in events.split(",") if name.strip()]
    try:
        with make_sessionmaker(get_settings()).begin() as session:
            endpoint = add_endpoint(
                session,
                _workspace_id(session, workspace),
                url,
                event_types=event_types,
                enabled=not disabled,
                now=utcnow(),
            )
    except TripmailError as exc:
        _fail(exc)
    click.echo(
        f"webhook endpoint {endpoint.id} of workspace {workspace}: {endpoint.url} receives "
        f"{','.join(endpoint.event_types)}{'' if endpoint.enabled else ' (disabled)'}; its secret (shown once; "
        "store it now):"
    )
    click.echo(endpoint.secret)


@webhooks.command("list")
@click.option("--workspace", required=True, help="Workspace key, as in the apply file.")
def webhooks_list(workspace: str) -> None:
    """List the workspace's endpoints, oldest first: id, url, event types, enabled, created."""
    from tripmail.db import make_sessionmaker
    from tripmail.webhooks.delivery_events import list_endpoints

    with make_sessionmaker(get_settings())() as session:
        endpoints = list_endpoints(session, _workspace_id(session, workspace))
    for endpoint in endpoints:
        click.echo(
            f"{endpoint.id}  {endpoint.url}  {','.join(endpoint.event_types)}  "
            f"{'enabled' if endpoint.enabled else 'disabled'}  created {endpoint.created_at:%Y-%m-%d %H:%M:%S}"
        )
    click.echo(f"{len(endpoints)} webhook endpoint(s) of workspace {workspace}")


@webhooks.command("remove")
@click.option("--workspace", required=True, help="Workspace key, as in the apply file.")
@click.argument("endpoint_ids", nargs=-1, required=True, type=int)
def webhooks_remove(workspace: str, endpoint_ids: tuple[int, ...]) -> None:
    """Remove endpoints by id (`tripmail webhooks list`), and what they had still to receive. When one id is not
    the workspace's, none is removed."""
    from tripmail.db import make_sessionmaker
    from tripmail.webhooks.delivery_events import remove_endpoint

    try:
        with make_sessionmaker(get_settings()).begin() as session:
            workspace_id = _workspace_id(session, workspace)
            for endpoint_id in dict.fromkeys(endpoint_ids):
                remove_endpoint(session, workspace_id, endpoint_id)
    except TripmailError as exc:
        _fail(exc)
    for endpoint_id in dict.fromkeys(endpoint_ids):
        click.echo(f"removed webhook endpoint {endpoint_id} of workspace {workspace}")


# How long the api keeps an idle connection open: longer than a load balancer's idle timeout (60 s at the usual
# ones). Closed first, by uvicorn's 5 s default, a connection the balancer reuses at that moment answers 502.
KEEP_ALIVE_S = 75


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="uvicorn worker processes.")
def api(host: str, port: int, workers: int) -> None:
    """Serve the HTTP API."""
    import uvicorn

    if workers > 1:
        # Each process counts the events it answers; /metrics, whichever process answers it, serves their sum.
        _count_in_files(os.environ, "api")
    settings = get_settings()
    if settings.metrics_port is not None:
        from tripmail.metrics import serve_api_metrics

        serve_api_metrics(settings, settings.metrics_port)
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_S,
    )


def _lane_queues(context: click.Context, parameter: click.Parameter, value: str | None) -> list[str]:
    """The Celery queues of the lanes named (all of them by default), fast lane first."""
    from tripmail.queue import QUEUES

    named = set(QUEUES) if value is None else {name.strip() for name in value.split(",")}
    if not named or not named <= set(QUEUES):
        raise click.BadParameter(f"{value!r}: the lanes are {', '.join(QUEUES)} (comma-separated)")
    return [queue for lane, queue in QUEUES.items() if lane in named]


@main.command()
@click.option("--concurrency", default=2, show_default=True, type=int, help="Pool processes.")
@click.option(
    "--hostname",
    help="The worker's node name in Flower and in its logs (Celery's %h, %n, %d apply); unique per worker. "
    "[default: celery@HOST]",
)
@click.option(
    "--queues",
    callback=_lane_queues,
    help="The lanes it takes tasks from, comma-separated: transactional (the fast lane), bulk; from both, it always "
    "takes the fast lane's first. [default: transactional,bulk]",
)
@click.pass_obj
def worker(log_level: str, concurrency: int, hostname: str | None, queues: list[str]) -> None:
    """Run a Celery worker; start more of them, anywhere, against the same Redis to scale out."""
    from tripmail.delivery.smtp import parse_relays

    try:
        parse_relays(get_settings().smtp_url.get_secret_value())
    except ValueError as exc:
        raise click.ClickException(f"TRIPMAIL_SMTP_URL: {exc}") from exc
    argv = [sys.executable, "-m", "celery", "-A", "worker.app:celery", "worker"]
    argv += [
        "--queues",
        ",".join(queues),
        "--concurrency",
        str(concurrency),
        "--loglevel",
        log_level,
        "--without-gossip",
        "--without-mingle",
        *(["--hostname", hostname] if hostname else []),
    ]
    env = dict(os.environ)
    if get_settings().worker_metrics_port is not None:
        # Each pool process writes its metrics to files there, and the worker's main process serves them summed on
        # TRIPMAIL_WORKER_METRICS_PORT.
        _count_in_files(env, "worker")
    # exec, so signals from a supervisor reach Celery itself and its warm shutdown runs.
    os.execve(sys.executable, argv, env)  # noqa: S606 - argv is built here, not from input


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=5555, show_default=True, type=int)
def flower(host: str, port: int) -> None:
    """Flower, Celery's monitor, on the configured broker: workers, tasks, queues."""
    import ipaddress

    auth = get_settings().flower_auth
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if auth is None and not loopback:
        raise click.ClickException(
            f"refusing to serve Flower on {host} without TRIPMAIL_FLOWER_AUTH=user:password: whoever reaches it can "
            "see every task and stop workers"
        )
    # Flower reads its options from FLOWER_* too: the password stays out of the process list.
    env = os.environ | ({"FLOWER_BASIC_AUTH": auth.get_secret_value()} if auth is not None else {})
    argv = [sys.executable, "-m", "celery", "-A", "worker.app:celery", "flower", f"--address={host}", f"--port={port}"]
    os.execve(sys.executable, argv, env)  # noqa: S606 - argv is built here, not from input


@main.command()
def scheduler() -> None:
    """Hand runs whose wait is over, and messages and webhooks due to be tried again, to the workers, and publish
    again tasks Redis lost; one is enough, more only hand the same ones out twice."""
    # exec, as for the worker: a supervisor's signals reach the scheduler itself.
    os.execv(sys.executable, [sys.executable, "-m", "worker.schedule"])  # noqa: S606 - a fixed argv


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=1025, show_default=True, type=int)
@click.option("--list", "list_only", is_flag=True, help="List the stored messages and exit.")
def mailcatcher(host: str, port: int, list_only: bool) -> None:
    """A local SMTP server that stores what it receives under TRIPMAIL_MAIL_DIR (var/mail)."""
    from tripmail.mailcatcher import list_mail, serve

    directory = get_settings().mail_dir
    if not list_only:
        serve(directory, host=host, port=port)
        return
    caught = list_mail(directory)
    for mail in caught:
        click.echo(f"{mail.received_at:%Y-%m-%d %H:%M:%S}  {mail.recipients}  {mail.subject!r}  {mail.path}")
    click.echo(f"{len(caught)} message(s) in {directory}")


@main.group()
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
        _fail(exc)
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
        _fail(exc)
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
