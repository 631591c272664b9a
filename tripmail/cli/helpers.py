"""What the commands over stored data share: a domain refusal as a click failure, a --workspace as its id."""

from typing import TYPE_CHECKING, NoReturn

import click

from tripmail.errors import TripmailError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


def fail(exc: TripmailError) -> NoReturn:
    """Refuse the command in the words of the domain's refusal."""
    raise click.ClickException(exc.detail) from exc


def find_workspace_id(session: "Session", key: str) -> int:
    """The id of the workspace with this key; a ClickException names a key that no workspace has."""
    from sqlalchemy import select

    from tripmail.models import Workspace

    found = session.scalars(select(Workspace.id).where(Workspace.key == key)).first()
    if found is None:
        raise click.ClickException(f"no workspace {key!r}")
    return found
