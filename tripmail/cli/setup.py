"""Setting up: the database schema, the apply file, API tokens."""

from pathlib import Path

import click

from tripmail.cli.helpers import fail, find_workspace_id
from tripmail.config import get_settings
from tripmail.errors import TripmailError


@click.command()
def migrate() -> None:
    """Create or upgrade the database schema."""
    from tripmail.migrations import upgrade

    upgrade(get_settings().database_url)
    click.echo("database is at the latest schema")


@click.command()
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
        fail(exc)
    for change in changes:
        click.echo(change)
    click.echo(f"{file}: {len(changes)} change(s)" if changes else f"{file}: already applied, nothing changed")


@click.group()
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
        fail(exc)
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
            find_workspace_id(session, workspace)
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
        fail(exc)
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
