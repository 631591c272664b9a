"""The operator's commands over a workspace's webhook endpoints."""

import click

from tripmail.cli.helpers import fail, find_workspace_id
from tripmail.config import get_settings
from tripmail.errors import TripmailError


@click.group()
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
                find_workspace_id(session, workspace),
                url,
                event_types=event_types,
                enabled=not disabled,
                now=utcnow(),
            )
    except TripmailError as exc:
        fail(exc)
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
        endpoints = list_endpoints(session, find_workspace_id(session, workspace))
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
            workspace_id = find_workspace_id(session, workspace)
            for endpoint_id in dict.fromkeys(endpoint_ids):
                remove_endpoint(session, workspace_id, endpoint_id)
    except TripmailError as exc:
        fail(exc)
    for endpoint_id in dict.fromkeys(endpoint_ids):
        click.echo(f"removed webhook endpoint {endpoint_id} of workspace {workspace}")
