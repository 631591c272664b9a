"""The operator's commands over a workspace's suppressed addresses."""

import click

from tripmail.cli.helpers import fail, find_workspace_id
from tripmail.config import get_settings
from tripmail.errors import TripmailError


@click.group()
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
        workspace_id = None if workspace is None else find_workspace_id(session, workspace)
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
            added = add_suppressions(
                session, find_workspace_id(session, workspace), emails, reason=reason, now=utcnow()
            )
    except TripmailError as exc:
        fail(exc)
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
            removed = remove_suppressions(session, find_workspace_id(session, workspace), emails)
    except TripmailError as exc:
        fail(exc)
    for address, was_suppressed in removed.items():
        click.echo(
            f"removed {address} from the suppressions of workspace {workspace}"
            if was_suppressed
            else f"{address} was not suppressed in workspace {workspace}"
        )
